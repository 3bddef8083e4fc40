"""The wire contract: the only code the client and the server share.

Field names are Score's and Song's camelCase exactly, because existing clients (the Java
score-client, the overture-song SDK) bind to them by name. Plain dataclasses: FastAPI serves and
documents them on the server, and the client checks what it receives with msgspec
(`codec.from_wire`), which imports in ~20 ms where pydantic took ~200 ms of every client start.

Modules: `score` (storage API), `song` (metadata API), `files` (which files are indexes and
which format htsget serves), `manifest` (the File Repository's manifests), `codec`.
Nothing here imports a web framework, an HTTP client, or the client or server packages.
"""
