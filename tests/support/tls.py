"""TLS in front of a test's Redis: a self-signed certificate made with ``openssl`` and a small
TLS-terminating proxy (the pip-installed redis-server has no TLS built in), so that hpcq's
clients, workers and Flower speak real TLS (``rediss://``) to the Redis they use."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import threading

from tests.support.ports import free_port


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def make_certificate(directory: str, host: str = "127.0.0.1") -> tuple[str, str]:
    """A self-signed certificate for ``host`` (an IP address): (cert.pem, key.pem)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=IP:{host}"],
                   check=True, capture_output=True)
    return cert, key


class TlsProxy:
    """Accepts TLS on ``port`` (127.0.0.1) and forwards the plain bytes to ``target_port``."""

    def __init__(self, target_port: int, cert: str, key: str):
        self.target_port = target_port
        self.port = free_port()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="tls-proxy")
        self.server = None

    def start(self) -> "TlsProxy":
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the TLS proxy did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(
            self._client, "127.0.0.1", self.port, ssl=self.context))
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError, asyncio.CancelledError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:
                    pass
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
