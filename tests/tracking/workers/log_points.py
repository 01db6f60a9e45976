"""A worker process for the tracking concurrency and fault tests: run it as a script.

It imports only plinth and the standard library. The last stdout line is JSON (or
"flushed <run id>" in ``kill`` mode). Modes:

- ``own``: start a run of its own, log params, tags and points, end it.
- ``shared``: attach to the run ``--run-id``, log points, exit (leaving the run open).
- ``create``: start and end ``--runs`` runs in one experiment.
- ``kill``: log ``--steps`` points, flush, say so, then log until killed, saying how many
  points were logged every 1,000.
- ``atexit``: ``plinth.start_run()`` without ``with`` or ``end()``; just exit.
- ``raise``: log points inside ``with plinth.start_run()``, then raise.

With ``--go FILE`` it writes ``--ready FILE`` and waits for ``FILE`` to appear before
touching the store, so that many workers start at the same moment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import plinth
from plinth.tracking.run import ActiveRun

KEYS = ("loss", "accuracy", "grad_norm")
KILL_DEADLINE_S = 60.0  # an orphaned "kill" worker stops by itself


def value(worker: int, key_index: int, step: int) -> float:
    """The value a worker logs: exact in binary, and not monotonic, so min, max and best matter."""
    return ((step * 7919 + key_index * 31 + worker * 101) % 1009) * 0.25


def params(worker: int) -> dict[str, object]:
    return {
        "worker": worker,
        "lr": 0.001 * (worker + 1),
        "layers": [worker, 64],
        "note": f"w{worker}",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["own", "shared", "create", "kill", "atexit", "raise"])
    parser.add_argument("--store")
    parser.add_argument("--artifacts")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--run-id")
    parser.add_argument("--ready")
    parser.add_argument("--go")
    args = parser.parse_args()
    if args.go:
        Path(args.ready).touch()
        deadline = time.monotonic() + 60
        while not Path(args.go).exists():  # a start line for all workers, not a wait for a result
            if time.monotonic() > deadline:
                sys.exit("worker: the start file never appeared")
            time.sleep(0.001)
    MODES[args.mode](args)


def _connect(args: argparse.Namespace) -> plinth.Client:
    return plinth.connect(store_uri=args.store, artifact_uri=args.artifacts, flush_interval=0.05)


def _log(run: ActiveRun, worker: int, steps: int, offset: int = 0) -> None:
    for i in range(steps):
        for k, key in enumerate(KEYS):
            run.log_metric(key, value(worker, k, i), step=offset + i)


def own(args: argparse.Namespace) -> None:
    client = _connect(args)
    w = args.worker
    tags = {"worker": str(w)}
    with client.start_run(experiment=args.experiment, name=f"worker-{w}", tags=tags) as run:
        run.log_params(params(w))
        run.set_tags({"phase": "train"})
        _log(run, w, args.steps)
    print(json.dumps({"run_id": run.id}))


def shared(args: argparse.Namespace) -> None:
    client = _connect(args)
    # The parent owns this run: the exit hook writes this worker's points, not the end.
    run = client.attach_run(args.run_id)
    _log(run, args.worker, args.steps, offset=args.worker * args.steps)
    print(json.dumps({"run_id": run.id}))


def create(args: argparse.Namespace) -> None:
    client = _connect(args)
    ids = []
    for _ in range(args.runs):
        run = client.start_run(experiment=args.experiment, capture_environment=False)
        run.end()
        ids.append(run.id)
    print(json.dumps({"run_ids": ids}))


def kill(args: argparse.Namespace) -> None:
    # Settings come from PLINTH_* variables, through the default client.
    with plinth.start_run(experiment=args.experiment, name="doomed") as run:
        for i in range(args.steps):
            run.log_metric("loss", value(0, 0, i), step=i)
        run.flush()
        print(f"flushed {run.id}", flush=True)
        i = args.steps
        stop = time.monotonic() + KILL_DEADLINE_S
        while time.monotonic() < stop:
            run.log_metric("loss", value(0, 0, i), step=i)
            i += 1
            if i % 1000 == 0:  # every point up to i was acknowledged
                print(f"logged {i}", flush=True)
    sys.exit("worker: nobody killed me")


def at_exit(args: argparse.Namespace) -> None:
    # A local: once this returns, only plinth's own bookkeeping can still reach the run.
    run = plinth.start_run(experiment=args.experiment, name="no-with")
    for i in range(args.steps):
        run.log_metric("loss", value(0, 0, i), step=i)
    print(json.dumps({"run_id": run.id}), flush=True)


def fail(args: argparse.Namespace) -> None:
    with plinth.start_run(experiment=args.experiment, name="raises") as run:
        for i in range(args.steps):
            run.log_metric("loss", value(0, 0, i), step=i)
        print(json.dumps({"run_id": run.id}), flush=True)
        raise RuntimeError("boom from the training loop")


MODES = {
    "own": own,
    "shared": shared,
    "create": create,
    "kill": kill,
    "atexit": at_exit,
    "raise": fail,
}

if __name__ == "__main__":
    main()
