"""`disco submit | jobs`: disco commands as Ray jobs on a cluster."""

from __future__ import annotations

import argparse
import sys

from arc_data.cli import command


def register(sub: argparse._SubParsersAction) -> None:
    s = command(sub, "submit", "submit `disco train|sweep|compare ...` to a Ray cluster as a job", [
        "disco submit --address http://HEAD:8265 -- train --config dis_compact --storage /mnt/disco/runs",
        "disco submit --env WANDB_API_KEY -- sweep --space width --name w --storage s3://bucket/runs --study-url URL"],
        "Submit a disco command as a Ray job: disco submit [--address URL] -- train ...")
    s.add_argument("--address", help="Jobs API, e.g. http://HEAD:8265 (default $RAY_API_SERVER_ADDRESS or "
                                      "http://127.0.0.1:8265)")
    s.add_argument("--env", action="append", default=[], metavar="NAME",
                   help="forward this environment variable to the job (value never printed); repeatable")
    s.add_argument("--id", help="submission id (default: generated)")
    s.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    s.set_defaults(func=_submit)

    j = command(sub, "jobs", "list, inspect, follow or stop Ray jobs",
                ["disco jobs list", "disco jobs logs raysubmit_XXXX --follow", "disco jobs stop raysubmit_XXXX"])
    j.add_argument("action", choices=("list", "status", "logs", "stop"))
    j.add_argument("job_id", nargs="?")
    j.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    j.add_argument("--address")
    j.set_defaults(func=_jobs)


def _submit(args: argparse.Namespace) -> None:
    from .jobs import submit

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    job = submit(args.address, argv, args.env, submission_id=args.id)
    print(job)
    print(f"follow it with: disco jobs logs {job} --follow" + (f" --address {args.address}" if args.address else ""),
          file=sys.stderr)


def _jobs(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError

    from .jobs import client

    c = client(args.address)
    if args.action == "list":
        for info in sorted(c.list_jobs(), key=lambda i: i.start_time or 0):
            status = str(info.status).split(".")[-1]
            print(f"{info.submission_id or info.job_id:36} {status:10} {info.entrypoint}")
        return
    if not args.job_id:
        raise DiscoError(f"jobs {args.action} needs a job id (see `disco jobs list`)")
    try:
        if args.action == "status":
            print(_status_line(c, args.job_id))
        elif args.action == "logs":
            if not args.follow:
                print(c.get_job_logs(args.job_id), end="")
                return
            import asyncio

            async def tail():
                async for chunk in c.tail_job_logs(args.job_id):
                    print(chunk, end="", flush=True)

            asyncio.run(tail())
            # A script that follows a job learns how it ended from the exit status.
            line = _status_line(c, args.job_id)
            if not line.split(": ", 1)[1].startswith("SUCCEEDED"):
                raise DiscoError(line)
        else:
            print(f"{args.job_id}: {'stop requested' if c.stop_job(args.job_id) else 'already finished'}")
    except RuntimeError as e:
        raise DiscoError(f"job {args.job_id}: {str(e).strip().splitlines()[-1]}") from None


def _status_line(c, job_id: str) -> str:
    info = c.get_job_info(job_id)
    # A failed job's message carries the tail of its logs; its first line says why (logs: `disco jobs logs`).
    why = (info.message or "").strip().splitlines()[:1]
    why = [w.split(", last available logs")[0] for w in why]
    return f"{job_id}: {str(info.status).split('.')[-1]}" + (f" ({why[0]})" if why else "")
