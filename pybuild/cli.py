"""The `pybuild` command: a thin argparse layer over `pybuild.api`.

`pybuild -f Dockerfile .` means `pybuild build -f Dockerfile .`. Heavy modules are
imported inside the command functions so that start-up stays light.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

COMMANDS = ("build", "run", "import", "load", "save", "tag", "images", "rmi", "inspect")


def _build_parser() -> argparse.ArgumentParser:
    from pybuild import __version__

    p = argparse.ArgumentParser(
        prog="pybuild", description="Build OCI images from Dockerfiles, and run them.")
    p.add_argument("--version", action="version", version=f"pybuild {__version__}")
    p.add_argument("--root", help="store directory (default $PYBUILD_ROOT or ~/.local/share/pybuild)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    b = sub.add_parser("build", help="build an image from a Dockerfile (the default command)")
    b.add_argument("context", nargs="?", default=".", help="build context directory")
    b.add_argument("-f", "--file", help="Dockerfile path ('-' reads stdin); default CONTEXT/Dockerfile")
    b.add_argument("-t", "--tag", action="append", default=[], help="name:tag (repeatable)")
    b.add_argument("--build-arg", action="append", default=[], metavar="NAME[=VALUE]")
    b.add_argument("--target", help="build this stage and what it needs")
    b.add_argument("--network", default="default", choices=("default", "none", "host"),
                   help="network of RUN steps")
    b.add_argument("--no-cache", action="store_true", help="run every step")
    b.add_argument("-o", "--output", action="append", default=[],
                   help="type=oci|docker|image|local|tar[,dest=PATH]; a bare PATH means type=local")
    b.add_argument("--progress", default="auto", choices=("auto", "tty", "plain", "quiet"))
    b.add_argument("--jobs", type=int, help="steps run at once (default: number of cores)")
    b.add_argument("-q", "--quiet", action="store_true", help="print only the image digest")

    r = sub.add_parser("run", help="run a command in a new container")
    r.add_argument("image", help="image reference, or an OCI/docker-archive tarball")
    r.add_argument("args", nargs=argparse.REMAINDER, metavar="COMMAND",
                   help="command and arguments (default: the image's ENTRYPOINT/CMD)")
    r.add_argument("--rm", action="store_true", help="remove the container when it exits")
    r.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]")
    r.add_argument("-w", "--workdir")
    r.add_argument("-u", "--user")
    r.add_argument("--entrypoint")
    r.add_argument("--network", default="none", choices=("none", "host"))

    i = sub.add_parser("import", help="make a one-layer image from a rootfs directory or tarball")
    i.add_argument("source")
    i.add_argument("reference", nargs="?")
    i.add_argument("-t", "--tag", dest="tag_opt")

    ld = sub.add_parser("load", help="load images from an OCI or docker-archive tarball")
    ld.add_argument("-i", "--input", required=True)

    sv = sub.add_parser("save", help="write images to a tarball")
    sv.add_argument("images", nargs="+")
    sv.add_argument("-o", "--output", required=True)
    sv.add_argument("--format", default="oci", choices=("oci", "docker"))

    t = sub.add_parser("tag", help="give an image another name")
    t.add_argument("source")
    t.add_argument("target")

    sub.add_parser("images", help="list images in the local store")

    rm = sub.add_parser("rmi", help="remove image names from the local store")
    rm.add_argument("images", nargs="+")

    ins = sub.add_parser("inspect", help="print an image's manifest and config as JSON")
    ins.add_argument("image")
    return p


def _split_args(argv: list[str]) -> list[str]:
    """Insert `build` when no command is named (`pybuild -f Dockerfile .`)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--root":
            i += 2
            continue
        if a.startswith("--root="):
            i += 1
            continue
        if a in COMMANDS or a in ("-h", "--help", "--version"):
            return argv
        return argv[:i] + ["build"] + argv[i:]
    return argv


def _build_args(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:  # docker: `--build-arg NAME` takes the value from the environment
            if k not in os.environ:
                continue
            v = os.environ[k]
        out[k] = v
    return out


def cmd_build(a) -> int:
    from pybuild import api

    text = None
    dockerfile = a.file
    if a.file == "-":
        text = sys.stdin.read()
        dockerfile = None
    progress = "quiet" if a.quiet else a.progress
    result = api.build(a.context, dockerfile, dockerfile_text=text, tags=a.tag,
                       build_args=_build_args(a.build_arg), target=a.target, network=a.network,
                       no_cache=a.no_cache, outputs=a.output, progress=progress, root=a.root,
                       jobs=a.jobs)
    if a.quiet:
        print(result.manifest_digest)
    else:
        sys.stderr.write(f"image {result.manifest_digest}\n")
        for t in result.tags:
            sys.stderr.write(f"naming to {t}\n")
        for o in result.outputs:
            sys.stderr.write(f"exported to {o}\n")
    return 0


def cmd_run(a) -> int:
    from pybuild import api

    command = list(a.args)
    if command and command[0] == "--":
        command = command[1:]
    from pybuild.sandbox.namespaces import ExecFailed

    try:
        result = api.run(a.image, command or None, env=a.env, workdir=a.workdir, user=a.user,
                         network=a.network, rm=a.rm, entrypoint=a.entrypoint, root=a.root)
    except ExecFailed as e:  # as docker: 127 not found, 126 not executable
        sys.stderr.write(f"ERROR: {e}\n")
        return e.exit_code
    return result.exit_code


def cmd_import(a) -> int:
    from pybuild import api

    ref = a.tag_opt or a.reference
    loaded = api.import_rootfs(a.source, ref, root=a.root)
    print(loaded.manifest_digest)
    return 0


def cmd_load(a) -> int:
    from pybuild import api

    for img in api.load(a.input, root=a.root):
        names = ", ".join(img.tags) if img.tags else "(untagged)"
        print(f"Loaded image: {names} {img.manifest_digest}")
    return 0


def cmd_save(a) -> int:
    from pybuild import api

    api.save(a.images, a.output, format=a.format, root=a.root)
    return 0


def cmd_tag(a) -> int:
    from pybuild import api

    api.tag(a.source, a.target, root=a.root)
    return 0


def cmd_images(a) -> int:
    from pybuild import api

    rows = api.images(root=a.root)
    print(f"{'REPOSITORY:TAG':<48} {'DIGEST':<19} {'SIZE':>10}  CREATED")
    for r in rows:
        print(f"{r.name:<48} {r.manifest_digest[7:19]:<19} {_human(r.size):>10}  {r.created}")
    return 0


def cmd_rmi(a) -> int:
    from pybuild import api

    for ref in a.images:
        api.rmi(ref, root=a.root)
        print(f"Untagged: {ref}")
    return 0


def cmd_inspect(a) -> int:
    import json

    from pybuild import api

    image = api.get_image(a.image, a.root)
    doc = {"Digest": image.manifest_digest,
           "Manifest": json.loads(image.manifest.to_json()),
           "Config": json.loads(image.config.to_json())}
    print(json.dumps(doc, indent=2))
    return 0


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{n}B"


def main(argv: Sequence[str] | None = None) -> int:
    args = _split_args(list(sys.argv[1:] if argv is None else argv))
    parser = _build_parser()
    a = parser.parse_args(args)
    if a.cmd is None:
        parser.print_help()
        return 1
    handler = globals()[f"cmd_{a.cmd}"]
    from pybuild.errors import DefinitionError, PybuildError

    try:
        return handler(a)
    except DefinitionError as e:
        sys.stderr.write(e.render() + "\n")
        return 1
    except PybuildError as e:
        sys.stderr.write(f"ERROR: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
