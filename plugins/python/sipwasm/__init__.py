"""The sipwasm Python SDK for plugins built with componentize-py.

`sipwasm.core` needs no host (request helpers, typed configuration, base64url) and is
tested under plain Python (`python3 -m unittest discover -s plugins/python`);
`sipwasm.plugin` adds the host's imports and the decision builders, and re-exports
`core`. Plugins import from `sipwasm.plugin`.
"""
