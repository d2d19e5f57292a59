"""A tiny MLServer runtime: sleeps the seconds the request asks for, then echoes them."""

import asyncio

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SleepModel(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        delay = float(NumpyCodec.decode_input(payload.inputs[0]).flatten()[0])
        await asyncio.sleep(delay)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("delay", NumpyCodec.decode_input(payload.inputs[0]))],
        )
