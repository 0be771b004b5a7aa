"""``trtforge serve``: warm pools behind the KServe v2 HTTP protocol (protocol, app, server)."""
