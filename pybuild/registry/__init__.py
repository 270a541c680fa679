"""Talking to OCI distribution registries: references, auth, pull and push.

`reference` says where a name lives and how to reach it (pure), `auth` finds and keeps
credentials (docker's config.json and credential helpers) and answers challenges,
`client` is the HTTP conversation (retries, token flow), `pull` and `push` move images
between a registry and the local store, `resolve` is what FROM uses. `fake` is an
in-process registry for tests, with faults to inject.
"""
