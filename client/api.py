"""Python client of the Object2Vec front door, on tritonclient (HTTP or gRPC, sync or asyncio).

    client = Client("localhost:8000")                    # or Client("localhost:8001", "grpc")
    client = Client("localhost:8080", "sagemaker")       # any SageMaker-contract endpoint
    vectors = client.embed([[6, 17, 606], [774, 14]])   # numpy [2, enc_dim], from enc0
    scores = client.score([([6, 17], [22, 1016])])      # numpy [1, num_classes]
    raw = client.invoke(b'{"in0": [1, 2]}', "application/jsonlines")

Server errors become `Object2VecError` carrying the server's message; `retryable` (from
contract/errors.py, the table the server answers by) tells a deterministic failure (a bad
request, a fault that the same request would hit again: never retried) from a passing one (no
connection, a timeout, an overloaded or restarting server).
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import orjson
from tritonclient.utils import InferenceServerException

from contract import errors
from contract.body import BODY_DATATYPE, encode_bodies
from contract.names import BODY_INPUT, FRONT_DOOR, JSON, RESPONSE_OUTPUT
from contract.neighbours import CATALOGUE_PARAMETER, EXCLUDE_KEY, K_PARAMETER

PROTOCOLS = ("http", "grpc", "sagemaker")


class Object2VecError(RuntimeError):
    """An answer that did not come: `message` is the server's, `retryable` says if it may pass."""

    def __init__(self, message: str, status: str | None = None, retryable: bool = False):
        super().__init__(message)
        self.message, self.status, self.retryable = message, status, retryable


def _modules(protocol: str, aio: bool):
    """(client module, tensor types module) of a protocol; only that protocol's are imported
    (tritonclient.grpc alone takes 46 ms: a short job pays every import)."""
    if protocol == "sagemaker":
        return None, None
    if protocol == "http":
        import tritonclient.http as types

        if aio:
            import tritonclient.http.aio as module
        else:
            module = types
    elif protocol == "grpc":
        import tritonclient.grpc as types

        if aio:
            import tritonclient.grpc.aio as module
        else:
            module = types
    else:
        raise ValueError(f"protocol {protocol!r}: choose one of {PROTOCOLS}")
    return module, types


def _retryable(status: str | None) -> bool:
    """contract/errors.py's answer for a status; no status at all (no connection, a client-side
    timeout) may pass."""
    kind = errors.of_status(status)
    return True if kind is None else kind.retry


def translate(error: Exception) -> Object2VecError:
    """Any failure of a call, as an Object2VecError that says whether to retry."""
    if isinstance(error, Object2VecError):
        return error
    if isinstance(error, urllib.error.HTTPError):
        return _http_error(str(error.code), error.read())
    if isinstance(error, InferenceServerException):
        status = str(error.status()) if error.status() is not None else None
        message = error.message() or str(error)
        return Object2VecError(message, status, retryable=_retryable(status))
    return Object2VecError(f"{type(error).__name__}: {error}", retryable=True)


def _http_error(status: str, raw: bytes) -> Object2VecError:
    """A SageMaker-contract endpoint's error answer (contract/errors.py's body, or any text)."""
    message = errors.message_of(raw, int(status))
    return Object2VecError(message, status, retryable=_retryable(status))


def _base_url(url: str) -> str:
    return url.rstrip("/") if "://" in url else f"http://{url.rstrip('/')}"


def _sagemaker_headers(content_type: str | None, accept: str | None) -> dict[str, str]:
    headers = {"Content-Type": content_type or JSON}
    if accept:
        headers["Accept"] = accept
    return headers


def _ping(url: str, timeout: float) -> bool:
    with urllib.request.urlopen(f"{_base_url(url)}/ping", timeout=timeout) as response:
        return response.status == 200


def execution_parameters(url: str, timeout: float = 10.0) -> dict:
    """GET /execution-parameters of a SageMaker-contract endpoint (what a Batch Transform job
    uses when it sets nothing); {} where the endpoint has none."""
    try:
        with urllib.request.urlopen(f"{_base_url(url)}/execution-parameters", timeout=timeout) as r:
            return orjson.loads(r.read())
    except (urllib.error.URLError, orjson.JSONDecodeError, OSError):
        return {}


def body_tensor(types, bodies: Sequence[bytes]):
    """The front door's input for these bodies, for `tritonclient.http` or `.grpc` (`types`):
    raw bytes, one zero-padded row per body (contract/body.py)."""
    array = encode_bodies(bodies)
    tensor = types.InferInput(BODY_INPUT, list(array.shape), BODY_DATATYPE)
    tensor.set_data_from_numpy(array)
    return tensor


# aiohttp (under tritonclient.http.aio) asks for `gzip, deflate` unless told otherwise, and
# Triton then compresses every answer, most of a big answer's time (docs/performance.md). A
# local answer is cheaper sent as it is.
_IDENTITY = {"Accept-Encoding": "identity"}


def _call_options(protocol: str, timeout: float, aio: bool) -> dict:
    """The keyword arguments of an infer call beside the tensors."""
    if protocol == "grpc":
        return {"client_timeout": timeout}
    return {"headers": _IDENTITY, **({"timeout": int(timeout)} if aio else {})}


def _request(types, body: bytes, content_type: str | None, accept: str | None):
    """(inputs, outputs, parameters) of one call. The output is named so that over HTTP it
    comes back as binary data (tritonclient's default for a named output) rather than as a
    JSON string escaped by the server and parsed by the client. (Measured alone it changed
    little; the compression below was the cost.)"""
    tensor = body_tensor(types, [body])
    output = types.InferRequestedOutput(RESPONSE_OUTPUT)
    params = {k: v for k, v in (("content_type", content_type), ("accept", accept)) if v}
    return [tensor], [output], params or None


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def instances_body(instances: Iterable[dict]) -> bytes:
    return orjson.dumps({"instances": list(instances)})


def _token_instances(token_lists: Sequence[Sequence[int]], key: str) -> list[dict]:
    if key not in ("in0", "in1"):
        raise ValueError(f"side {key!r}: use 'in0' (enc0) or 'in1' (enc1)")
    return [{key: list(map(int, tokens))} for tokens in token_lists]


def _pair_instances(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[dict]:
    return [{"in0": list(map(int, a)), "in1": list(map(int, b))} for a, b in pairs]


class Neighbour(NamedTuple):
    id: str | int  # the catalogue's id of the item
    score: float  # the catalogue's similarity (contract.neighbours.SIMILARITIES)


def neighbours_type(k: int, catalogue: str | None = None, content_type: str = JSON) -> str:
    """The content type that asks for the k nearest catalogue items of each in0."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: ask for at least one neighbour")
    named = f"; {CATALOGUE_PARAMETER}={catalogue}" if catalogue else ""
    return f"{content_type}; {K_PARAMETER}={k}{named}"


def _query_instances(
    token_lists: Sequence[Sequence[int]], exclude: Sequence[Sequence[str | int]] | None
) -> list[dict]:
    """in0 instances, each with the catalogue ids its answer leaves out (its own list of
    `exclude`, matched by position)."""
    instances = _token_instances(token_lists, "in0")
    if exclude is None:
        return instances
    if len(exclude) != len(instances):
        raise ValueError(
            f"exclude has {len(exclude)} lists for {len(instances)} sequences: give one each"
        )
    for instance, ids in zip(instances, exclude, strict=True):
        if ids:
            instance[EXCLUDE_KEY] = list(ids)
    return instances


def _neighbours(answer: bytes) -> list[list[Neighbour]]:
    return [
        [Neighbour(n["id"], n["score"]) for n in p["neighbours"]]
        for p in orjson.loads(answer)["predictions"]
    ]


def _column(answer: bytes, key: str) -> np.ndarray:
    return np.array([p[key] for p in orjson.loads(answer)["predictions"]], dtype=np.float32)


class _Connection:
    """What both clients hold: the tritonclient of one server and the call settings."""

    _aio = False

    def __init__(
        self,
        url: str = "localhost:8000",
        protocol: str = "http",
        timeout: float = 60.0,
        model: str = FRONT_DOOR,
    ):
        module, self._types = _modules(protocol, aio=self._aio)
        self.url, self.protocol, self.timeout, self.model = url, protocol, timeout, model
        self._session = None  # aiohttp.ClientSession: sagemaker, asyncio only
        if protocol == "sagemaker":
            # POST /invocations with the hosted headers; no tritonclient involved.
            self._client = None
            self._invocations = f"{_base_url(url)}/invocations"
        elif protocol == "grpc":
            self._client = module.InferenceServerClient(url)
        elif self._aio:
            self._client = module.InferenceServerClient(url, conn_timeout=timeout)
        else:
            self._client = module.InferenceServerClient(
                url, connection_timeout=timeout, network_timeout=timeout
            )


class Client(_Connection):
    """Synchronous client of one server."""

    def invoke(
        self, body: bytes | str, content_type: str | None = JSON, accept: str | None = None
    ) -> bytes:
        """The front door's answer to one body, as bytes in the accept format."""
        if self.protocol == "sagemaker":
            request = urllib.request.Request(
                self._invocations, _as_bytes(body), _sagemaker_headers(content_type, accept)
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except Exception as error:  # noqa: BLE001 - every failure is translated
                raise translate(error) from error
        inputs, outputs, params = _request(self._types, _as_bytes(body), content_type, accept)
        kwargs = _call_options(self.protocol, self.timeout, aio=False)
        try:
            result = self._client.infer(
                self.model, inputs, outputs=outputs, parameters=params, **kwargs
            )
        except Exception as error:  # noqa: BLE001 - every failure is translated
            raise translate(error) from error
        return result.as_numpy(RESPONSE_OUTPUT).reshape(-1)[0]

    def predict(self, instances: Sequence[dict]) -> list[dict]:
        return orjson.loads(self.invoke(instances_body(instances), JSON, JSON))["predictions"]

    def embed(self, token_lists: Sequence[Sequence[int]], side: str = "in0") -> np.ndarray:
        """[N, enc_dim] embeddings of enc0 (side 'in0') or enc1 ('in1')."""
        body = instances_body(_token_instances(token_lists, side))
        return _column(self.invoke(body, JSON, JSON), "embeddings")

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> np.ndarray:
        """[N, num_classes] probabilities, or [N, 1] regression values."""
        return _column(self.invoke(instances_body(_pair_instances(pairs)), JSON, JSON), "scores")

    def neighbours(
        self,
        token_lists: Sequence[Sequence[int]],
        k: int = 10,
        catalogue: str | None = None,
        exclude: Sequence[Sequence[str | int]] | None = None,
    ) -> list[list[Neighbour]]:
        """For each in0, its k nearest items of the server's catalogue index, best first;
        `exclude[i]`: catalogue ids left out of in0 i's answer (a user's history)."""
        body = instances_body(_query_instances(token_lists, exclude))
        return _neighbours(self.invoke(body, neighbours_type(k, catalogue), JSON))

    def is_ready(self) -> bool:
        try:
            if self.protocol == "sagemaker":
                return _ping(self.url, self.timeout)
            return bool(self._client.is_model_ready(self.model))
        except Exception:  # noqa: BLE001 - not reachable is not ready
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if time.monotonic() > deadline:
                raise Object2VecError(
                    f"{self.url}: {self.model} not ready after {timeout:.0f} s", retryable=True
                )
            time.sleep(0.2)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Connection):
    """asyncio client of one server; same calls as `Client`, awaited."""

    _aio = True

    async def invoke(
        self, body: bytes | str, content_type: str | None = JSON, accept: str | None = None
    ) -> bytes:
        if self.protocol == "sagemaker":
            return await self._invoke_sagemaker(_as_bytes(body), content_type, accept)
        inputs, outputs, params = _request(self._types, _as_bytes(body), content_type, accept)
        kwargs = _call_options(self.protocol, self.timeout, aio=True)
        try:
            result = await self._client.infer(
                self.model, inputs, outputs=outputs, parameters=params, **kwargs
            )
        except Exception as error:  # noqa: BLE001 - every failure is translated
            raise translate(error) from error
        return result.as_numpy(RESPONSE_OUTPUT).reshape(-1)[0]

    async def _invoke_sagemaker(
        self, body: bytes, content_type: str | None, accept: str | None
    ) -> bytes:
        if self._session is None:
            import aiohttp  # here: its import builds an SSL context, 0.25 s every client paid

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(
                self._invocations, data=body, headers=_sagemaker_headers(content_type, accept)
            ) as response:
                raw = await response.read()
                if response.status != 200:
                    raise _http_error(str(response.status), raw)
                return raw
        except Object2VecError:
            raise
        except Exception as error:  # noqa: BLE001 - connection failures, timeouts: transient
            raise translate(error) from error

    async def predict(self, instances: Sequence[dict]) -> list[dict]:
        answer = await self.invoke(instances_body(instances), JSON, JSON)
        return orjson.loads(answer)["predictions"]

    async def embed(self, token_lists: Sequence[Sequence[int]], side: str = "in0") -> np.ndarray:
        body = instances_body(_token_instances(token_lists, side))
        return _column(await self.invoke(body, JSON, JSON), "embeddings")

    async def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> np.ndarray:
        body = instances_body(_pair_instances(pairs))
        return _column(await self.invoke(body, JSON, JSON), "scores")

    async def neighbours(
        self,
        token_lists: Sequence[Sequence[int]],
        k: int = 10,
        catalogue: str | None = None,
        exclude: Sequence[Sequence[str | int]] | None = None,
    ) -> list[list[Neighbour]]:
        body = instances_body(_query_instances(token_lists, exclude))
        return _neighbours(await self.invoke(body, neighbours_type(k, catalogue), JSON))

    async def is_ready(self) -> bool:
        try:
            if self.protocol == "sagemaker":
                return await asyncio.to_thread(_ping, self.url, self.timeout)
            return bool(await self._client.is_model_ready(self.model))
        except Exception:  # noqa: BLE001 - not reachable is not ready
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
