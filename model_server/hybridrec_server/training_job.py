"""The container entry point of a retraining Job: ``python -m hybridrec_server.training_job``.

Configured by the environment the operator renders (``core/training.build_job``):

* ``HYBRIDREC_TRAIN_DATA_URI``: ``s3://bucket/key`` of the interactions (format below).
* ``HYBRIDREC_TRAIN_OUTPUT_URI``: this run's own prefix; the new version is written there, never over the serving one.
* ``HYBRIDREC_TRAIN_ARCHITECTURE``, ``HYBRIDREC_TRAIN_EPOCHS``, ``HYBRIDREC_TRAIN_VERSION`` (the run's name),
  ``HYBRIDREC_TRAIN_SEED`` (default 0).
* ``HYBRIDREC_SERVING_MODEL_URI`` / ``HYBRIDREC_SERVING_MODEL_SHA256``: the serving version, evaluated on the same
  held-out split so the gate compares like with like.
* ``AWS_ENDPOINT_URL`` etc.: the S3 endpoint and credentials (boto3's standard chain).

Input format: one interaction per line, ``user_id,item_id,rating,timestamp`` (comma- or tab-separated; a header line
naming the columns is optional; three columns mean ``user_id,item_id,timestamp``). MovieLens 100K's ``u.data`` is
read as it is; so is a RecBole ``.inter`` file (typed header ``user_id:token ...``). Ratings are ignored (implicit
feedback); timestamps order each user's interactions for the leave-one-out split (``train.py``).

Output under ``<output>/``: ``config.json``, ``model.safetensors``, ``evaluation.json``, then ``manifest.json`` last:
a run killed midway leaves no manifest, so nothing half-written is ever promoted. Checkpoints, so a replacement pod
(spot reclaim) resumes instead of starting over: after every epoch the training state goes to
``<output>/checkpoints/epochs/`` (``train_checkpoint``: ``epoch-NNNN.safetensors``, then the pointer ``latest.json``),
and a replacement pod resumes at the next epoch; the trained artifact goes to ``<output>/checkpoints/artifact/``
before evaluation and upload, and a replacement pod finding it skips training altogether. Once the manifest is
written, ``<output>/checkpoints/`` is removed; a replacement pod that finds the manifest (the pod was killed after the
upload) returns the written version's result without training or writing anything. The result (uri, manifest
sha256, scores, ``resumedFromEpoch``) is also written to the container's termination message, which the operator reads
from the pod status (it needs no S3 access).

Exit codes: 0 done; 2 the input can never work (missing object, empty or corrupt file; the Job's podFailurePolicy
fails the run at once with this message); 1 anything else (retried within the Job's backoffLimit).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import MANIFEST_NAME, ArtifactError, parse_manifest, parse_s3_uri, push, read_verified, s3_client, sha256_hex

log = logging.getLogger("hybridrec_server.training_job")
EXIT_BAD_INPUT = 2
EXIT_ERROR = 1
EVALUATION_NAME = "evaluation.json"
CHECKPOINTS_PREFIX = "checkpoints/"  # removed once the version's manifest is written
CHECKPOINT_PREFIX = CHECKPOINTS_PREFIX + "artifact/"
EPOCH_CHECKPOINT_PREFIX = CHECKPOINTS_PREFIX + "epochs/"
TERMINATION_LOG = "/dev/termination-log"
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
MIN_ITEMS = 100  # the evaluation ranks each held-out item against 99 sampled items the user never saw


class BadInput(Exception):
    """The input can never train a model: retrying does not help."""


@dataclass(frozen=True)
class JobConfig:
    data_uri: str
    output_uri: str
    architecture: str
    epochs: int
    version: str
    seed: int
    serving_uri: str | None
    serving_sha256: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> JobConfig:
        env = dict(os.environ if env is None else env)
        try:
            return cls(
                data_uri=env["HYBRIDREC_TRAIN_DATA_URI"],
                output_uri=env["HYBRIDREC_TRAIN_OUTPUT_URI"],
                architecture=env.get("HYBRIDREC_TRAIN_ARCHITECTURE", "two-tower"),
                epochs=int(env.get("HYBRIDREC_TRAIN_EPOCHS", "10")),
                version=env.get("HYBRIDREC_TRAIN_VERSION", ""),
                seed=int(env.get("HYBRIDREC_TRAIN_SEED", "0")),
                serving_uri=env.get("HYBRIDREC_SERVING_MODEL_URI") or None,
                serving_sha256=env.get("HYBRIDREC_SERVING_MODEL_SHA256") or None,
            )
        except (KeyError, ValueError) as exc:
            raise BadInput(f"training job misconfigured: {exc!r}") from None


# ------------------------------------------------------------------------------------------------ input


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_interactions(text: str) -> list[tuple[str, str, float]]:
    """(user, item, timestamp) rows from the documented formats (pure); ``BadInput`` names the first bad line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BadInput("the interactions file is empty")
    sep = "\t" if "\t" in lines[0] else ","
    first = [c.strip() for c in lines[0].split(sep)]
    if ":" in lines[0] and any(c.split(":", 1)[0] == "user_id" for c in first):  # RecBole typed header
        names = [c.split(":", 1)[0] for c in first]
        body = lines[1:]
    elif not _is_number(first[-1]):  # a header of plain names
        names = [c.lower() for c in first]
        body = lines[1:]
    else:
        names = ["user_id", "item_id", "rating", "timestamp"] if len(first) >= 4 else ["user_id", "item_id", "timestamp"]
        body = lines
    try:
        u, i, t = names.index("user_id"), names.index("item_id"), names.index("timestamp")
    except ValueError:
        raise BadInput(f"the header names {names}; it needs user_id, item_id and timestamp") from None
    rows = []
    for number, line in enumerate(body, start=len(lines) - len(body) + 1):
        parts = [c.strip() for c in line.split(sep)]
        if len(parts) < len(names) or not parts[u] or not parts[i] or not _is_number(parts[t]):
            raise BadInput(f"line {number} is not user_id{sep}item_id{sep}...{sep}timestamp: {line[:80]!r}")
        rows.append((parts[u], parts[i], float(parts[t])))
    if not rows:
        raise BadInput("the interactions file has a header but no rows")
    items = {r[1] for r in rows}
    if len(items) < MIN_ITEMS:
        raise BadInput(f"the interactions name {len(items)} items; the evaluation needs at least {MIN_ITEMS}")
    return rows


def write_inter(rows: list[tuple[str, str, float]], path: Path) -> Path:
    """The rows as a RecBole ``.inter`` file, what ``train.train_and_evaluate`` reads."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write(INTER_HEADER)
        for user, item, ts in rows:
            fh.write(f"{user}\t{item}\t{ts}\n")
    return path


def fetch_text(s3: Any, uri: str) -> str:
    from botocore.exceptions import ClientError

    loc = parse_s3_uri(uri)
    key = loc.prefix.rstrip("/")
    try:
        body = s3.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"NoSuchKey", "404", "NoSuchBucket"}:
            raise BadInput(f"{uri} does not exist ({code})") from None
        raise
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{uri} is not UTF-8 text (corrupt or compressed?)") from None


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


# ------------------------------------------------------------------------------------------- evaluation


def evaluate_serving(cfg: JobConfig, inter: Path, workdir: Path) -> dict[str, float] | None:
    """HR@10 / NDCG@10 of the serving version on the run's own held-out split (same users, items, negatives as the
    new version), answered as the server would: unknown users get its popularity fallback, unknown items miss."""
    if not cfg.serving_uri:
        return None
    from .data import encode, leave_one_out, ndcg_at_k, hit_rate_at_k, read_interactions
    from .predictor import RecommenderModel
    from .train import make_eval_set, user_sequences

    model = RecommenderModel("serving", cfg.serving_uri, expected_sha256=cfg.serving_sha256,
                             cache_dir=str(workdir / "serving-cache"), device="cpu", precision="fp32")
    model.load()
    enc = encode(read_interactions(inter))
    split = leave_one_out(enc)
    test = make_eval_set(enc, split.test_users, split.test_items, cfg.seed + 2)
    seqs = user_sequences(split.train_users, split.train_items, len(enc.user_ids))
    for u, i in zip(split.val_users.tolist(), split.val_items.tolist()):
        seqs[u].append(i)
    ranks = []
    for row, user in enumerate(test.users.tolist()):
        positive = enc.item_ids[int(test.positives[row])]
        candidates = [positive] + [enc.item_ids[int(n)] for n in test.negatives[row]]
        known = [c for c in candidates if c in model._item_index]  # what the serving version can rank at all
        history = [enc.item_ids[i] for i in seqs[user]]
        if positive not in known:
            ranks.append(len(candidates))
            continue
        query = model.prepare(enc.user_ids[user], len(known), candidates=known, history=history)
        answer = model.predict([query])[0]
        order = [item for item, _ in answer.items]
        ranks.append(order.index(positive) if positive in order else len(candidates))
    arr = np.asarray(ranks)
    return {"hr@10": hit_rate_at_k(arr, 10), "ndcg@10": ndcg_at_k(arr, 10)}


# ------------------------------------------------------------------------------------------------- output


def upload_version(s3: Any, artifact: Path, output_uri: str, evaluation: dict[str, Any]) -> str:
    """Files, evaluation.json, then manifest.json last; returns the manifest sha256."""
    loc = parse_s3_uri(output_uri)
    manifest = (artifact / MANIFEST_NAME).read_bytes()
    for name in parse_manifest(manifest):
        s3.put_object(Bucket=loc.bucket, Key=loc.key(name), Body=(artifact / name).read_bytes())
    s3.put_object(Bucket=loc.bucket, Key=loc.key(EVALUATION_NAME), Body=(json.dumps(evaluation, indent=1, sort_keys=True) + "\n").encode())
    s3.put_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME), Body=manifest)
    return sha256_hex(manifest)


def restore_checkpoint(s3: Any, output_uri: str, dest: Path) -> Path | None:
    """The trained artifact a previous pod of this run left, verified, or None."""
    from .artifacts import pull

    loc = parse_s3_uri(output_uri)
    if not _exists(s3, loc.bucket, loc.key(CHECKPOINT_PREFIX + MANIFEST_NAME)):
        return None
    try:
        return pull(f"s3://{loc.bucket}/{loc.key(CHECKPOINT_PREFIX)}", dest, client=s3)
    except ArtifactError as exc:
        log.warning("checkpoint unusable, training again: %s", exc)
        return None


def written_result(s3: Any, output_uri: str, cfg: JobConfig) -> dict[str, Any] | None:
    """The result of a version already written under ``output_uri`` (its manifest, written last, is there: a pod
    killed after the upload, whose replacement must neither train again nor write over it), else None."""
    loc = parse_s3_uri(output_uri)
    if not _exists(s3, loc.bucket, loc.key(MANIFEST_NAME)):
        return None
    manifest = s3.get_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME))["Body"].read()
    parse_manifest(manifest)
    evaluation = json.loads(s3.get_object(Bucket=loc.bucket, Key=loc.key(EVALUATION_NAME))["Body"].read())
    config = json.loads(s3.get_object(Bucket=loc.bucket, Key=loc.key("config.json"))["Body"].read())
    return {"uri": output_uri, "sha256": sha256_hex(manifest), "version": str(config.get("version", cfg.version)),
            "architecture": str(config.get("architecture", cfg.architecture)), "evaluation": evaluation,
            "resumedFromEpoch": (config.get("metrics") or {}).get("resumed_from_epoch")}


def remove_checkpoints(s3: Any, output_uri: str) -> int:
    """Delete ``<output>/checkpoints/`` (the epochs' state and the trained artifact) once the version's manifest is
    written: nothing resumes from them any more (``written_result`` answers a replacement pod first), and one
    epoch's state is about four times the model. Returns the number of objects deleted."""
    loc = parse_s3_uri(output_uri)
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key(CHECKPOINTS_PREFIX)):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=loc.bucket, Delete={"Objects": objects, "Quiet": True})
            deleted += len(objects)
    return deleted


def _clean_up(s3: Any, output_uri: str) -> None:
    try:
        n = remove_checkpoints(s3, output_uri)
    except Exception as exc:  # noqa: BLE001 - the version is written; leftover checkpoints only cost storage
        log.warning("the version is written, but its checkpoints at %s%s were not removed: %s", output_uri,
                    CHECKPOINTS_PREFIX, exc)
        return
    if n:
        log.info("removed %d checkpoint object(s) under %s%s", n, output_uri, CHECKPOINTS_PREFIX)


def run(cfg: JobConfig, workdir: Path, s3: Any = None) -> dict[str, Any]:
    """Train, evaluate, write the version; returns the result the operator reads."""
    from .train import train_and_evaluate
    from .train_checkpoint import EpochCheckpoints, S3Store

    s3 = s3 or s3_client()
    out = parse_s3_uri(cfg.output_uri)
    output_uri = f"s3://{out.bucket}/{out.prefix}"
    if (done := written_result(s3, output_uri, cfg)) is not None:
        log.info("the version at %s is already written (manifest sha256 %s): nothing to train", output_uri, done["sha256"])
        _clean_up(s3, output_uri)
        return done
    inter = write_inter(parse_interactions(fetch_text(s3, cfg.data_uri)), workdir / "interactions.inter")
    artifact = restore_checkpoint(s3, output_uri, workdir / "checkpoint")
    metrics: dict[str, Any]
    if artifact is not None:
        log.info("resuming from the checkpoint at %s%s", output_uri, CHECKPOINT_PREFIX)
        metrics = dict(read_verified(artifact).config.get("metrics", {}))
    else:
        epochs = EpochCheckpoints(S3Store(s3, out.bucket, out.key(EPOCH_CHECKPOINT_PREFIX)))
        try:
            artifact, metrics = train_and_evaluate(cfg.architecture, cfg.epochs, workdir / "artifact", data_path=inter,
                                                   seed=cfg.seed, device=None, version=cfg.version or None,
                                                   checkpoints=epochs)
        except ValueError as exc:  # e.g. too few unseen items for the sampled negatives
            raise BadInput(f"cannot train on this data: {exc}") from None
        push(artifact, f"{output_uri}{CHECKPOINT_PREFIX}", client=s3)
    serving = evaluate_serving(cfg, inter, workdir)
    evaluation = {
        "hitRateAt10": metrics["hr@10"], "ndcgAt10": metrics["ndcg@10"],
        "popularityHitRateAt10": metrics["popularity_hr@10"], "popularityNdcgAt10": metrics["popularity_ndcg@10"],
        **({"servingHitRateAt10": serving["hr@10"], "servingNdcgAt10": serving["ndcg@10"]} if serving else {}),
        "testUsers": metrics.get("n_test_users"), "epochsRun": metrics.get("epochs_run"), "dataUri": cfg.data_uri,
        "servingUri": cfg.serving_uri,
    }
    sha = upload_version(s3, artifact, output_uri, evaluation)
    version = str(read_verified(artifact).config.get("version", cfg.version))
    _clean_up(s3, output_uri)
    return {"uri": output_uri, "sha256": sha, "version": version, "architecture": cfg.architecture, "evaluation": evaluation,
            "resumedFromEpoch": metrics.get("resumed_from_epoch")}


def write_termination_message(result: dict[str, Any], path: str) -> None:
    """The compact result the operator reads from the pod status (Kubernetes keeps at most 4096 bytes)."""
    keep = ("hitRateAt10", "ndcgAt10", "servingHitRateAt10", "servingNdcgAt10", "popularityHitRateAt10", "popularityNdcgAt10")
    compact = {**{k: result[k] for k in ("uri", "sha256", "version", "architecture")},
               "resumedFromEpoch": result.get("resumedFromEpoch"),
               "evaluation": {k: v for k, v in result["evaluation"].items() if k in keep}}
    try:
        Path(path).write_text(json.dumps(compact, separators=(",", ":")), encoding="utf-8")
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    termination = os.environ.get("HYBRIDREC_TERMINATION_LOG", TERMINATION_LOG)
    try:
        cfg = JobConfig.from_env()
        with tempfile.TemporaryDirectory(prefix="hybridrec-train-") as tmp:
            result = run(cfg, Path(tmp))
    except BadInput as exc:
        log.error("bad input: %s", exc)
        try:
            Path(termination).write_text(f"bad input: {exc}"[:4000], encoding="utf-8")
        except OSError:
            pass
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - any other failure is retried by the Job
        log.exception("training failed")
        try:
            Path(termination).write_text(f"training failed: {exc!r}"[:4000], encoding="utf-8")
        except OSError:
            pass
        return EXIT_ERROR
    write_termination_message(result, termination)
    log.info("wrote %s (manifest sha256 %s): HR@10 %.4f", result["uri"], result["sha256"], result["evaluation"]["hitRateAt10"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
