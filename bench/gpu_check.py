"""GPU check: encoder throughput on the GPU against the CPU, one command under 8 minutes.

    python3 bench/gpu_check.py [--device auto|cpu] [--seconds 5] [--out DIR]
    python -m bench.gpu_check --served [--seconds 5] [--out DIR]

Served mode (`--served`, on a host with the NGC image and a GPU, or anywhere the embedded
server runs): builds the realistic model into a fresh repository, starts the server as the
image's entrypoint does (`tritonserver` from PATH when there is one, else the embedded binary;
configs for this host: front door copies from the cores, networks on the GPUs over BLS), runs
perf_analyzer's gRPC sweep on the realistic single-sequence workload, and prints instances
per second per GPU beside in-process ONNX Runtime on the CUDA provider (and TensorRT where the
build has it) at its best length-bucketed batch, the ceiling of bench/suite.py. It runs in one
Python with this project's bench install (`pip install -e ".[client,export,server,bench]"`,
inside the NGC container or on a host whose PATH has its tritonserver); untried on an NGC GPU
host so far (docs/performance.md, "GPU readiness").

Prepared for a session that is lent an accelerator: it needs only PyTorch, ONNX and ONNX Runtime
(all in the device image) and this project's `export/` package. It builds the realistic encoder
(hcnn, enc_dim 512, token embedding 300, 4 layers, vocabulary 50,000; random weights), feeds
batches of 64 sequences of 20 to 80 tokens, and reports sequences per second for PyTorch on the
CPU and on CUDA (FP32, and FP16 autocast), and for ONNX Runtime on the CPU and, where the
installed build has it, on the CUDA provider; the GPU answers are checked against the CPU's.
`--device cpu` runs the CPU rows only (what the test does on a machine with no GPU).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a plain script too

from bench.realistic import REALISTIC, TOKENS_PER_SEQUENCE  # noqa: E402
from contract.padding import pad
from export.hyperparameters import Hyperparameters  # noqa: E402
from export.network import Object2Vec  # noqa: E402

SMALL = REALISTIC | {
    "enc_dim": 32,
    "enc0_token_embedding_dim": 16,
    "enc0_layers": 2,
    "enc0_vocab_size": 1000,
    "enc1_vocab_size": 1000,
}


def batches(vocab: int, count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        pad(
            [
                rng.integers(1, vocab, rng.integers(*TOKENS_PER_SEQUENCE)).tolist()
                for _ in range(size)
            ],
            80,
        )
        for _ in range(count)
    ]


def rate(run, inputs: list, seconds: float, sync=lambda: None) -> float:
    """Sequences per second of `run` over the inputs, cycled for `seconds` after a warm-up."""
    for x in inputs[:3]:
        run(x)
    sync()
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run(inputs[i % len(inputs)])
        done += len(inputs[i % len(inputs)])
        i += 1
    sync()
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--small", action="store_true", help="a tiny encoder (for tests)")
    parser.add_argument("--out", type=Path, help="also write results.json here")
    parser.add_argument("--served", action="store_true", help="Triton served, see above")
    args = parser.parse_args(argv)
    if args.served:
        return served(args.seconds, args.out, args.small)

    torch.manual_seed(0)
    hp = Hyperparameters.from_dict(SMALL if args.small else REALISTIC)
    encoder = Object2Vec(hp).eval().enc0
    inputs = batches(hp.enc0_vocab_size, 8, args.batch)
    cpu_threads = torch.get_num_threads()
    results: list[dict] = []

    def record(system: str, device: str, seqs_per_s: float, max_abs_diff: float | None = None):
        results.append(
            {
                "system": system,
                "device": device,
                "sequences_per_s": seqs_per_s,
                "max_abs_diff_vs_cpu": max_abs_diff,
            }
        )
        diff = "" if max_abs_diff is None else f"   max |diff| vs CPU {max_abs_diff:.2e}"
        print(f"{system:22} {device:6} {seqs_per_s:12,.0f} seq/s{diff}", flush=True)

    print(
        f"encoder: {hp.encoder(0).network}, enc_dim {hp.enc_dim}, batch {args.batch}, "
        f"20-80 tokens; CPU threads {cpu_threads}",
        flush=True,
    )
    with torch.no_grad():
        reference = encoder(torch.from_numpy(inputs[0])).numpy()
        record(
            "pytorch fp32",
            "cpu",
            rate(lambda x: encoder(torch.from_numpy(x)), inputs, args.seconds),
        )

        import onnxruntime as ort

        buffer = io.BytesIO()
        warnings.filterwarnings("ignore", module="torch.onnx")  # the legacy exporter's notice
        torch.onnx.export(
            encoder,
            (torch.from_numpy(inputs[0]),),
            buffer,
            input_names=["tokens"],
            output_names=["embedding"],
            dynamic_axes={"tokens": {0: "batch", 1: "length"}},
            dynamo=False,
        )
        cpu_session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        record(
            "onnxruntime",
            "cpu",
            rate(lambda x: cpu_session.run(None, {"tokens": x}), inputs, args.seconds),
        )

        if args.device == "auto" and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            gpu = encoder.to("cuda")
            on_gpu = [torch.from_numpy(x).to("cuda") for x in inputs]
            diff = float(np.abs(gpu(on_gpu[0]).cpu().numpy() - reference).max())
            record(
                "pytorch fp32",
                "cuda",
                rate(gpu, on_gpu, args.seconds, torch.cuda.synchronize),
                diff,
            )
            with torch.autocast("cuda", dtype=torch.float16):
                diff = float(np.abs(gpu(on_gpu[0]).float().cpu().numpy() - reference).max())
                record(
                    "pytorch fp16 autocast",
                    "cuda",
                    rate(gpu, on_gpu, args.seconds, torch.cuda.synchronize),
                    diff,
                )
            if "CUDAExecutionProvider" in ort.get_available_providers():
                session = ort.InferenceSession(
                    buffer.getvalue(), providers=["CUDAExecutionProvider"]
                )
                diff = float(np.abs(session.run(None, {"tokens": inputs[0]})[0] - reference).max())
                record(
                    "onnxruntime",
                    "cuda",
                    rate(lambda x: session.run(None, {"tokens": x}), inputs, args.seconds),
                    diff,
                )
            else:
                print(
                    "onnxruntime: no CUDAExecutionProvider in this build "
                    f"({ort.get_available_providers()})",
                    flush=True,
                )
        elif args.device == "auto":
            print("no CUDA device: CPU rows only", flush=True)

    cpu = results[0]["sequences_per_s"]
    for row in results[1:]:
        print(
            f"{row['system']} on {row['device']}: {row['sequences_per_s'] / cpu:.1f}x "
            "PyTorch on the CPU"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


SERVED_CONCURRENCIES = (1, 16, 64, 256)


def served(seconds: float, out: Path | None, small: bool) -> int:
    """The served mode: Triton on this host against in-process ONNX Runtime."""
    import os
    import shutil
    import tempfile

    import onnxruntime as ort

    from bench import suite
    from bench.peers import Pipeline
    from server.common.onnx_sessions import network_runner
    from server.launcher.embedded import EmbeddedServer
    from server.launcher.host import Host
    from server.launcher.launch import Launch
    from server.launcher.plan import assemble, triton_process
    from server.launcher.process import free_port

    folder = Path(out or tempfile.mkdtemp(prefix="o2v-gpu-check-"))
    work = folder / "served"
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    model = "demo" if small else "realistic"
    repository, _ = suite.build_model(model, work, suite.ServingSettings())
    ngc = shutil.which("tritonserver")
    if ngc:  # the image: its tritonserver and backends, configs for this host
        launch = Launch.from_env(os.environ, repository, **ports)
        for config in repository.glob("*/configs"):
            shutil.rmtree(config)
        process = triton_process(assemble(launch, ngc, None, os.environ)).start()
        process.wait_ready(600)
        grpc_url = f"localhost:{launch.grpc_port}"
    else:
        server = EmbeddedServer(repository, **ports).start(timeout=600)
        process, grpc_url = server, server.grpc_url
    host = Host.detect()
    print(f"host: {host}; server: {ngc or 'embedded'}", flush=True)
    workload = next(w for w in suite.workloads(model) if w.name == "embed-1")
    rows = []
    try:
        rows += suite.perf_analyzer(
            grpc_url,
            workload,
            "grpc",
            folder,
            model,
            quick=seconds < 3,
            concurrencies=SERVED_CONCURRENCIES,
        )
    finally:
        process.stop()
    providers = [("cpu", ["CPUExecutionProvider"])]
    if host.gpus:
        providers += [
            ("cuda", ["CUDAExecutionProvider"]),
            ("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider"]),
        ]
    probe = repository / "enc0" / "1" / "model.onnx"
    for name, chosen in providers:
        # onnxruntime-gpu lists its providers even where they cannot load: ask a session.
        if ort.InferenceSession(str(probe), providers=chosen).get_providers()[0] != chosen[0]:
            print(f"in-process onnxruntime {name}: {chosen[0]} did not load here", flush=True)
            continue
        pipeline = Pipeline(repository, network_runner(repository, providers=chosen))
        rows.append(
            suite.in_process(pipeline, workload, f"in-process onnxruntime {name}", model, seconds)
        )
    gpus = max(1, host.gpus)
    per = f"per GPU = total / {gpus}" if host.gpus else "no GPU here: per GPU = total"
    print(f"\n{model} model, one sequence per request; {per}")
    for row in rows:
        where = f"c{row.concurrency}" if row.concurrency else row.protocol
        print(
            f"{row.system:34} {where:10} {row.instances_per_s:10,.0f} inst/s "
            f"{row.instances_per_s / gpus:10,.0f} per GPU   p50 {row.p50_ms:7.2f} ms"
        )
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "served.json").write_text(json.dumps([row.__dict__ for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
