"""The path parameter that holds a file name, in both apps' routes.

Starlette's ``{name}`` stops at ``/`` and its ``{name:path}`` stops at a newline. Upload names
contain ``/`` (``<device id>/<command key>``, sent as ``%2F`` and decoded before routing), and a
name with a control character must reach the handler to be refused with a clear 422 rather than
an anonymous 404. So file names match any non-empty text; importing :data:`NAME` registers the
convertor before a route uses it.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class FileNameConvertor(Convertor[str]):
    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("file_name", FileNameConvertor())

# Use in route paths: f"/download/{NAME}".
NAME = "{name:file_name}"
