"""A tiny BentoML service: sleeps the seconds the request asks for, then echoes them."""

import asyncio

import bentoml


@bentoml.service(workers=1)
class Sleep:
    @bentoml.api
    async def predict(self, delay: float) -> float:
        await asyncio.sleep(delay)
        return delay
