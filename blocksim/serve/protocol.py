"""QMP's wire format as QEMU 7.2 speaks it: framing, greeting, errors.

- :class:`JSONStreamer` splits a byte stream into JSON messages the way
  QEMU's ``qobject/json-lexer.c`` and ``json-streamer.c``
  (``json_message_process_token``) do: by counting braces and brackets over
  tokens, not by lines.  A token outside any brace or bracket is a message
  of its own (``5`` or ``garbage``).  A byte that cannot start a token is a
  ``JSON parse error, stray '...'`` and the lexer skips to the next
  structural character or control character (``IN_RECOVERY``).  The limits
  are QEMU's: 64 MiB of tokens per message (``JSON token size limit
  exceeded``), 2 Mi tokens (``JSON token count limit exceeded``), nesting
  1024 (``JSON nesting depth limit exceeded``); after an error the pending
  message is dropped and lexing carries on with the next byte, so memory is
  bounded by the limits.
- :func:`check_request` is ``qapi/qmp-dispatch.c:qmp_dispatch_check_obj``
  with QEMU's wording.
- :func:`encode` prints a message as QEMU's ``qobject_to_json`` does
  (``", "`` and ``": "``, ``\\uXXXX`` in capitals, ending ``\\r\\n`` as
  ``monitor_puts`` ends lines), with QEMU's member
  order: ``{"return", "id"}``, ``{"id", "error"}``,
  ``{"timestamp", "event", "data"}`` (what qemu-storage-daemon 7.2.22
  printed in /tmp/work/serve-exp/exp.out).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: what QEMU 7.2.22 (Debian's build, the installed one) says in its greeting
QEMU_VERSION = {"qemu": {"micro": 22, "minor": 2, "major": 7},
                "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}

# qobject/json-streamer.c
MAX_TOKEN_SIZE = 64 << 20
MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1 << 10

NEGOTIATION_DESC = "Expecting capabilities negotiation with 'qmp_capabilities'"


class QMPError(Exception):
    """A command's refusal: ``{"class", "desc"}``."""

    def __init__(self, desc: str, error_class: str = "GenericError"):
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class


def greeting(capabilities=("oob",)) -> dict:
    return {"QMP": {"version": QEMU_VERSION, "capabilities": list(capabilities)}}


_UESC = re.compile(r"\\u([0-9a-f]{4})")


def encode(message: dict) -> bytes:
    text = json.dumps(message)
    text = _UESC.sub(lambda m: "\\u" + m.group(1).upper(), text)
    # monitor_puts: every "\n" goes out as "\r\n"
    return (text + "\r\n").encode()


def response(value: Any, id_: Any = None, has_id: bool = False) -> dict:
    out: dict[str, Any] = {"return": {} if value is None else value}
    if has_id:
        out["id"] = id_
    return out


def error_response(desc: str, error_class: str = "GenericError", id_: Any = None,
                   has_id: bool = False) -> dict:
    out: dict[str, Any] = {}
    if has_id:
        out["id"] = id_
    out["error"] = {"class": error_class, "desc": desc}
    return out


def event_message(event: dict) -> dict:
    out = {"timestamp": event["timestamp"], "event": event["event"]}
    if event.get("data") or event["event"] not in ("STOP", "RESUME"):
        out["data"] = event.get("data", {})
    return out


def check_request(obj: Any, allow_oob: bool) -> tuple[str, dict, bool]:
    """``qmp_dispatch_check_obj``: ``(command, arguments, oob)`` or QMPError."""
    if not isinstance(obj, dict):
        raise QMPError("QMP input must be a JSON object")
    exec_key = None
    for name, value in obj.items():
        if name == "execute" or (name == "exec-oob" and allow_oob):
            if not isinstance(value, str):
                raise QMPError(f"QMP input member '{name}' must be a string")
            if exec_key:
                raise QMPError(f"QMP input member '{name}' clashes with '{exec_key}'")
            exec_key = name
        elif name == "arguments":
            if not isinstance(value, dict):
                raise QMPError("QMP input member 'arguments' must be an object")
        elif name == "id":
            continue
        else:
            raise QMPError(f"QMP input member '{name}' is unexpected")
    if exec_key is None:
        raise QMPError("QMP input lacks member 'execute'")
    return obj[exec_key], dict(obj.get("arguments") or {}), exec_key == "exec-oob"


# -- the lexer and streamer ----------------------------------------------------------
_WS = re.compile(rb"[ \t\n\r]+")
_DQ = re.compile(rb'"(?:[^"\\\x00-\x1f]|\\[^\x00-\x1f])*"')
_SQ = re.compile(rb"'(?:[^'\\\x00-\x1f]|\\[^\x00-\x1f])*'")
_STRING_BODY = re.compile(rb'(?:[^"\\\x00-\x1f]|\\[^\x00-\x1f])*\\?\Z')
_SQ_BODY = re.compile(rb"(?:[^'\\\x00-\x1f]|\\[^\x00-\x1f])*\\?\Z")
_NUMBER = re.compile(rb"-?[0-9][0-9.eE+\-]*|-")
_KEYWORD = re.compile(rb"[a-z]+")
# IN_RECOVERY: skip to a structural character, a control character other
# than '\t', or the impossible UTF-8 bytes 0xFE, 0xFF
_RECOVERY = re.compile(rb"[^{}\[\],:\x00-\x08\x0a-\x1f\xfe\xff]*")
_STRUCTURAL = b"{}[],:"


class JSONStreamer:
    """Feed bytes, get ``(value, None)`` or ``(None, error desc)`` per message."""

    def __init__(self):
        self.buf = b""
        self.recovering = False
        self._reset()

    def _reset(self) -> None:
        self.tokens: list[bytes] = []
        self.size = 0
        self.braces = 0
        self.brackets = 0

    def feed(self, data: bytes) -> list[tuple[Any, str | None]]:
        out: list[tuple[Any, str | None]] = []
        buf = self.buf + data
        pos, end = 0, len(buf)
        while pos < end:
            if self.recovering:
                pos = _RECOVERY.match(buf, pos).end()
                if pos >= end:
                    break
                self.recovering = False
            m = _WS.match(buf, pos)
            if m:
                pos = m.end()
                continue
            c = buf[pos:pos + 1]
            if c in (b'"', b"'"):
                m = (_DQ if c == b'"' else _SQ).match(buf, pos)
                if m is None:
                    body = (_STRING_BODY if c == b'"' else _SQ_BODY).match(buf, pos + 1)
                    if body is not None:          # not finished yet: wait for more
                        if end - pos > MAX_TOKEN_SIZE:
                            self._error(out, "JSON token size limit exceeded")
                            pos = end
                        break
                    self._stray(out, buf, pos)
                    pos += 1
                    continue
                token = m.group()
                if c == b"'":
                    token = self._single_to_double(token)
            elif c in b"-0123456789" and c:
                m = _NUMBER.match(buf, pos)
                if m.end() == end:
                    break
                token = m.group()
            elif b"a" <= c <= b"z":
                m = _KEYWORD.match(buf, pos)
                if m.end() == end:
                    break
                token = m.group()
            elif c in _STRUCTURAL:
                token = c
            else:
                self._stray(out, buf, pos)
                pos += 1
                continue
            pos += len(token) if c != b"'" else m.end() - m.start()
            self._token(out, token)
        self.buf = buf[pos:]
        return out

    @staticmethod
    def _single_to_double(token: bytes) -> bytes:
        text = token[1:-1].decode("utf-8", "replace")
        text = text.replace("\\'", "'")
        return json.dumps(json.loads('"' + text.replace('"', '\\"') + '"')).encode()

    def _stray(self, out, buf: bytes, pos: int) -> None:
        char = buf[pos:pos + 1].decode("utf-8", "replace")
        self._error(out, f"JSON parse error, stray '{char}'")
        self.recovering = True

    def _error(self, out, desc: str) -> None:
        self._reset()
        out.append((None, desc))

    def _token(self, out, token: bytes) -> None:
        # json-streamer.c:json_message_process_token
        if token == b"{":
            self.braces += 1
        elif token == b"}":
            self.braces -= 1
        elif token == b"[":
            self.brackets += 1
        elif token == b"]":
            self.brackets -= 1
        if self.size + len(token) + 1 > MAX_TOKEN_SIZE:
            return self._error(out, "JSON token size limit exceeded")
        if len(self.tokens) + 1 > MAX_TOKEN_COUNT:
            return self._error(out, "JSON token count limit exceeded")
        if self.braces + self.brackets > MAX_NESTING:
            return self._error(out, "JSON nesting depth limit exceeded")
        self.tokens.append(token)
        self.size += len(token)
        if (self.braces > 0 or self.brackets > 0) and self.braces >= 0 and self.brackets >= 0:
            return None
        tokens = self.tokens
        self._reset()
        out.append(_parse(tokens))
        return None


def _parse(tokens: list[bytes]) -> tuple[Any, str | None]:
    """``json_parser_parse`` on one message's tokens (QEMU's wording for the
    common errors; Python's parser decides what is valid)."""
    for token in tokens:
        if token[:1].isalpha() and token not in (b"true", b"false", b"null"):
            return None, f"JSON parse error, invalid keyword '{token.decode()}'"
    try:
        return json.loads(b" ".join(tokens), object_pairs_hook=_no_duplicates), None
    except _DuplicateKey:
        return None, "JSON parse error, duplicate key"
    except (ValueError, RecursionError):
        return None, "JSON parse error, expecting value"


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey()
    return out
