"""Test helpers shipped with the code (as go-containerregistry does): a busybox rootfs
made from the host's static busybox, so tests and the demo need no registry.

    python3 -m pybuild.testing rootfs DIR     # write the rootfs into DIR
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app user:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
"""


class NoBusybox(RuntimeError):
    pass


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.exists(path):
            out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout \
                if shutil.which("file") else "statically linked"
            if "dynamically" not in out:
                return path
    raise NoBusybox("a static busybox is needed: apt-get install busybox-static")


def make_busybox_rootfs(dest: str) -> str:
    """A minimal Linux rootfs: /bin/busybox with every applet linked, /etc files, /tmp."""
    busybox = find_busybox()
    os.makedirs(dest, exist_ok=True)
    for d in ("bin", "etc", "tmp", "root", "home/app", "usr/share/doc/busybox", "var"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    os.chown(os.path.join(dest, "home/app"), 1000, 1000) if os.geteuid() == 0 else None
    target = os.path.join(dest, "bin", "busybox")
    shutil.copy2(busybox, target)
    os.chmod(target, 0o755)
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        link = os.path.join(dest, "bin", name)
        if name != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    files = {
        "etc/passwd": PASSWD, "etc/group": GROUP,
        "etc/motd": "Welcome to the pybuild test base image.\n",
        "etc/os-release": 'NAME="busybox"\nID=busybox\n',
        "usr/share/doc/busybox/README": "BusyBox combines tiny versions of many UNIX utilities.\n",
    }
    for rel, text in files.items():
        with open(os.path.join(dest, rel), "w") as f:
            f.write(text)
    return dest


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "rootfs":
        sys.stderr.write("usage: python3 -m pybuild.testing rootfs DIR\n")
        return 2
    make_busybox_rootfs(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
