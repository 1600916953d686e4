"""CPU per SuperLink request: Flower's own SuperLink app vs the one ``fedfusion coordinator run`` starts, side by side.

Every request of a deployed round passes through the SuperLink, one Python process (docs/OPERATOR_GUIDE.md, "What a
round costs"), so its CPU per request bounds the round. Each arm runs in a fresh child process: "flower" builds
Flower's app as ``flower-superlink`` does; "fedfusion" first applies what the product's launcher applies
(``superlink_launch.frozen_superlink_entry``: middleware scoped to their APIs, task-claim sweep throttled, start-up
heap frozen). Both build the app with Flower's ``create_app`` on a SQLite state file (the product's setting) with
SuperNode authentication on, register and activate one node, and send it ``REQUESTS`` signed Fleet requests in
turn through the app in process (``httpx.ASGITransport``: no TLS or sockets; the requests are signed before the
clock starts, so what is timed is the app's work plus httpx's in-process client, the same for both arms): an idle
``pull-messages`` (what a site sends most) and a ``send-node-heartbeat``. The arms alternate ``REPEATS`` times;
medians of CPU per request and their ratio are printed and written to ``benchmarks/results/superlink_request.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedfusion.atomic_io import atomic_write_text
from fedfusion.flower_compat import FLEET_AUTH_HEADERS

ARMS = ("flower", "fedfusion")
REQUESTS = 400
REPEATS = 3
RESULT_FILE = Path(__file__).resolve().parent / "results" / "superlink_request.json"


def measure(arm: str, database: Path) -> float:
    """CPU seconds per signed Fleet request through the SuperLink app of ``arm`` (in this process)."""
    if arm == "fedfusion":
        from fedfusion.deployment.coordinator.superlink_launch import frozen_superlink_entry

        frozen_superlink_entry()
    import httpx
    from flwr.proto.fleet_pb2 import PullMessagesRequest
    from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest
    from flwr.proto.node_pb2 import Node
    from flwr.supercore.date import now
    from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes, sign_message
    from flwr.superlink.main import create_app

    os.environ["FLWR_DATABASE"] = str(database)
    app = create_app()
    app.state.enable_supernode_auth = True
    private_key, public_key = generate_key_pairs()
    key = public_key_to_bytes(public_key)
    state = app.state.linkstate_factory.state()
    node_id = state.create_node("operator", "operator", key, heartbeat_interval=30.0, name="site-a")
    state.activate_node(node_id, 30.0)
    bodies = {"/v1/fleet/pull-messages": PullMessagesRequest(node=Node(node_id=node_id)).SerializeToString(),
              "/v1/fleet/send-node-heartbeat": SendNodeHeartbeatRequest(
                  node=Node(node_id=node_id), heartbeat_interval=30.0).SerializeToString()}

    def signed() -> dict[str, str]:
        timestamp = now().isoformat()
        signature = sign_message(private_key, timestamp.encode("ascii"))
        values = (base64.b64encode(key).decode("ascii"), timestamp, base64.b64encode(signature).decode("ascii"))
        return {"content-type": "application/protobuf", **dict(zip(FLEET_AUTH_HEADERS, values, strict=True))}

    signatures = [signed() for _ in range(REQUESTS + len(bodies))]  # signed before the clock starts: server work only

    async def send_all() -> float:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://superlink") as client:
            for path, body in bodies.items():  # warm-up, and a check that the node is admitted
                answer = await client.post(path, content=body, headers=signatures.pop(0))
                if answer.status_code != 200:
                    raise SystemExit(f"{arm}: {path} answered {answer.status_code}: {answer.text[:200]}")
            started = time.process_time()
            for index in range(REQUESTS):
                path = "/v1/fleet/pull-messages" if index % 2 == 0 else "/v1/fleet/send-node-heartbeat"
                answer = await client.post(path, content=bodies[path], headers=signatures.pop(0))
                answer.raise_for_status()
            return (time.process_time() - started) / REQUESTS

    return asyncio.run(send_all())


def run_arm(arm: str, folder: Path) -> float:
    """One arm in a fresh child process: CPU seconds per request."""
    database = folder / f"{arm}-{time.monotonic_ns()}.db"
    done = subprocess.run([sys.executable, __file__, "--arm", arm, "--database", str(database)],
                          capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"arm {arm} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split()[-1])


def main() -> None:
    """Alternate the arms ``REPEATS`` times; print and record the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--database", type=Path)
    args = parser.parse_args()
    if args.arm:
        print(measure(args.arm, args.database))
        return
    samples: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="fedfusion-superlink-bench-") as tmp:
        for _ in range(REPEATS):
            for arm in ARMS:
                samples[arm].append(run_arm(arm, Path(tmp)))
    median = {arm: statistics.median(values) for arm, values in samples.items()}
    ratio = median["fedfusion"] / median["flower"]
    for arm in ARMS:
        print(f"{arm:>9}: {median[arm] * 1e3:.2f} ms of CPU per request (runs: "
              f"{', '.join(f'{v * 1e3:.2f}' for v in samples[arm])})")
    print(f"fedfusion / flower: {ratio:.2f}")
    result = {"requests_per_run": REQUESTS, "repeats": REPEATS, "requests": ["fleet pull-messages (idle)",
              "fleet send-node-heartbeat"], "cpu_ms_per_request": {a: [v * 1e3 for v in s] for a, s in samples.items()},
              "median_cpu_ms_per_request": {a: v * 1e3 for a, v in median.items()}, "fedfusion_over_flower": ratio,
              "cpus": os.cpu_count(), "load_average_1_5_15_min": list(os.getloadavg())}
    atomic_write_text(RESULT_FILE, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
