"""Move the `champion` alias by hand, with an audit line on the registered model.

    python -m flows.registry rollback --name rotten-tomatoes-sentiment --reason "v7 mislabels sarcasm"
    python -m flows.registry promote --name rotten-tomatoes-sentiment --version 5 --reason "approved by QA"
    python -m flows.registry history --name rotten-tomatoes-sentiment

rollback moves `champion` back to the version it replaced (from the audit record; repeated
rollbacks walk further back). Consumers of models:/<name>@champion get the new target on their
next load. MLflow's store is the pipeline's: tracking.mlflow_uri in --params, else
$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db (mlcore/tracking/store.py; `python -m mlcore.tracking.store`
prints it).
"""
from __future__ import annotations

import argparse
import sys

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlcore.config import load_config
from mlcore.config.environment import redact
from mlcore.errors import UserError, entry_point
from mlcore.tracking import audit
from mlcore.tracking.store import resolve_store


def _champion(client: MlflowClient, name: str) -> str:
    try:
        client.get_registered_model(name)
    except MlflowException as err:
        raise UserError(f"no registered model named {name!r} in the MLflow store {redact(client.tracking_uri)} "
                        f"({err.message.splitlines()[0]}). Check --name (register.model_name in params.yaml) and "
                        f"the store (tracking.mlflow_uri, else $MLFLOW_TRACKING_URI).") from None
    try:
        return str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        raise UserError(f"registered model {name!r} has no `champion` version, so there is nothing to roll back. "
                        f"Promote one: python -m flows.registry promote --name {name} --version N --reason '...'") \
            from None


def rollback(client: MlflowClient, name: str, reason: str) -> dict:
    current = _champion(client, name)
    target = audit.rollback_target(audit.read(client, name), current)
    if target is None:
        raise UserError(f"registered model {name!r}: the audit record names no champion before version {current} "
                        f"(it was the first, or was promoted before audits were kept). Promote a version by hand "
                        f"instead: python -m flows.registry promote --name {name} --version N --reason '...'")
    _check_version(client, name, target)
    client.set_registered_model_alias(name, "champion", target)
    return audit.append(client, name, "rollback", current, target, reason, audit.actor("flows.registry rollback"))


def promote(client: MlflowClient, name: str, version: str, reason: str) -> dict:
    current = _champion_or_none(client, name)
    _check_version(client, name, version)
    client.set_registered_model_alias(name, "champion", version)
    return audit.append(client, name, "manual-promote", current, version, reason,
                        audit.actor("flows.registry promote"))


def _champion_or_none(client: MlflowClient, name: str) -> str | None:
    try:
        return _champion(client, name)
    except UserError:
        client.get_registered_model(name)  # a missing model still fails, below, naming it
        return None


def _check_version(client: MlflowClient, name: str, version: str) -> None:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        raise UserError(f"registered model {name!r} has no version {version} (deleted?). "
                        f"List them: python -m flows.registry history --name {name}") from None


def history(client: MlflowClient, name: str) -> str:
    _champion_or_none(client, name)
    lines = [f"{e['at']}  {e['action']:<14} {e.get('from') or '-':>4} -> {e.get('to') or '-':<4} {e['reason']}"
             f"  [{e['by']}]" for e in audit.read(client, name)]
    return "\n".join(lines) or f"{name}: no audit lines yet"


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (("rollback", "move champion back to the version it replaced"),
                          ("promote", "make a version champion by hand"), ("history", "print the audit record")):
        sub = commands.add_parser(command, help=text, description=text)
        sub.add_argument("--name", help="registered model (default: register.model_name in --params)")
        sub.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        if command == "promote":
            sub.add_argument("--version", required=True, help="the version to make champion")
        if command != "history":
            sub.add_argument("--reason", required=True, help="why: kept in the audit record")
    args = parser.parse_args(argv)
    import mlflow

    cfg = load_config(args.params)
    mlflow.set_tracking_uri(resolve_store(cfg))
    name, client = args.name or cfg.register.model_name, MlflowClient()
    if args.command == "history":
        print(history(client, name))
        return 0
    line = (rollback(client, name, args.reason) if args.command == "rollback"
            else promote(client, name, str(args.version), args.reason))
    print(f"{name}: champion {line['from'] or '-'} -> {line['to']} ({line['action']}: {line['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
