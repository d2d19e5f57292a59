"""A tiny KServe Python model: sleeps the seconds the request asks for, then echoes them."""

import asyncio
import sys

import kserve


class Sleep(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload, headers=None):
        delay = float(payload["instances"][0])
        await asyncio.sleep(delay)
        return {"predictions": [delay]}


if __name__ == "__main__":
    kserve.ModelServer(workers=1).start([Sleep(sys.argv[1] if len(sys.argv) > 1 else "sleep")])
