"""Tests of the SDK's host-free part: `python3 -m unittest discover -s plugins/python`."""

import base64
import unittest
from types import SimpleNamespace

from sipwasm.core import (
    REQUIRED,
    b64url_decode,
    b64url_encode,
    cookie,
    header,
    header_values,
    parse_config,
    path,
    query,
)


def req(target, headers=()):
    return SimpleNamespace(target=target, headers=list(headers))


class Core(unittest.TestCase):
    def test_headers_by_name(self):
        r = req("/", [("Host", " a.example "), ("X-List", "a, b"), ("x-list", "c")])
        self.assertEqual(header(r, "host"), "a.example")
        self.assertIsNone(header(r, "nope"))
        self.assertEqual(header_values(r, "X-LIST"), ["a", "b", "c"])

    def test_path_query_cookie(self):
        r = req(
            "/ws/x?token=1%3Aalice%3Amac&a+b=c+d&flag&t=%E2%82%AC#frag",
            [("Cookie", "a=1; session=abc.def"), ("Cookie", "b=2")],
        )
        self.assertEqual(path(r), "/ws/x")
        self.assertEqual(query(r, "token"), "1:alice:mac")
        self.assertEqual(query(r, "a b"), "c d")
        self.assertEqual(query(r, "flag"), "")
        self.assertEqual(query(r, "t"), "€")
        self.assertIsNone(query(r, "frag"))
        self.assertIsNone(query(req("/"), "x"))
        self.assertEqual(cookie(r, "session"), "abc.def")
        self.assertEqual(cookie(r, "b"), "2")
        self.assertIsNone(cookie(r, "c"))

    def test_typed_config(self):
        schema = {"key": ("string", "login"), "max-lifetime": ("integer", 86400)}
        self.assertEqual(parse_config("{}", schema), {"key": "login", "max-lifetime": 86400})
        self.assertEqual(parse_config('{"key": "k2"}', schema)["key"], "k2")
        with self.assertRaisesRegex(ValueError, 'unknown config key "kee"'):
            parse_config('{"kee": "x"}', schema)
        with self.assertRaisesRegex(ValueError, '"max-lifetime" must be of kind integer'):
            parse_config('{"max-lifetime": "1d"}', schema)
        with self.assertRaisesRegex(ValueError, '"max-lifetime" must be of kind integer'):
            parse_config('{"max-lifetime": true}', schema)
        with self.assertRaisesRegex(ValueError, '"need" is required'):
            parse_config("{}", {"need": ("strings", REQUIRED)})

    def test_base64url(self):
        for plain, coded in [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")]:
            self.assertEqual(b64url_encode(plain.encode()), coded)
            self.assertEqual(b64url_decode(coded), plain.encode())
        self.assertEqual(b64url_encode(bytes([0xFB, 0xFF])), "-_8")
        for bad in ["+/8", "Zg==", "Z", "Zh", "Zm9v\n"]:
            self.assertIsNone(b64url_decode(bad), bad)
        for n in range(40):
            data = bytes((i * 37) & 255 for i in range(n))
            self.assertEqual(b64url_decode(b64url_encode(data)), data)
            self.assertEqual(b64url_encode(data), base64.urlsafe_b64encode(data).rstrip(b"=").decode())


if __name__ == "__main__":
    unittest.main()
