"""A small client for the IGpt service (standard library only), shared by the scripts here.

`running_service(url)` yields a base URL: the one given, or a service it starts itself with
`dotnet run --project src/IGpt.Api` on a free loopback port and stops afterwards.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterator, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "training"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: Optional[bytes] = None, content_type: Optional[str] = None,
            accept: str = "application/json", timeout: float = 600):
    """(status, headers, body bytes) of one HTTP request; problem answers are returned, not raised."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    req.add_header("Accept", accept)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def post_json(url: str, payload: dict, accept: str = "application/json"):
    return request(url, json.dumps(payload).encode(), "application/json", accept)


def post_image(url: str, png: bytes, fields: dict, accept: str = "application/json"):
    """multipart/form-data with the image as a file, like `curl -F image=@x.png -F k=v`."""
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.png"\r\n'
                  'Content-Type: image/png\r\n\r\n').encode() + png + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return request(url, b"".join(parts), f"multipart/form-data; boundary={boundary}", accept)


def png_bytes(pixels) -> bytes:
    """uint8 [H, W] or [H, W, 1|3] -> PNG bytes."""
    from PIL import Image
    a = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels
    buf = io.BytesIO()
    Image.fromarray(a, "L" if a.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def decode_png(b64: str):
    from PIL import Image
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@contextlib.contextmanager
def running_service(url: Optional[str], models_path: Optional[str] = None) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if models_path:
        env["Inference__ModelsPath"] = os.path.abspath(models_path)
    proc = subprocess.Popen(["dotnet", "run", "-c", "Release", "--project", os.path.join(REPO, "src", "IGpt.Api"),
                             "--", "--urls", base], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the service exited with code {proc.returncode}")
            try:
                status, _, _ = request(base + "/health/live", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            raise RuntimeError("the service did not start within 300 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def add_test_set_args(p) -> None:
    """The options that name the dataset whose test split a model was measured on."""
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data", default=None, help="dataset folder (default: the loader's default)")
    p.add_argument("--emoji-sets", default="google,twitter",
                   help="with --dataset emoji: the emoji sets the model was prepared from (its test split depends on them)")


def load_test_set(args, height: int, width: int, channels: int):
    """The raw test split (images, labels) named by add_test_set_args' options, as `prepare` split it."""
    from igpt.data import load_raw

    raw = load_raw(args.dataset, args.data, height, width, channels, emoji_sets=tuple(args.emoji_sets.split(",")))
    return raw.test.images, raw.test.labels
