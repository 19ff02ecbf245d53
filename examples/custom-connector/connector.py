#!/usr/bin/env python3
"""A privacy-operator custom connector for a toy "legacy ERP" that keeps its customers in a
JSON file. It implements the custom-image contract (docs/connectors/custom-image.md) with the
Python standard library only:

  in:  the task file named by $PRIVACY_OPERATOR_TASK (JSON, mounted from the per-Job Secret);
  out: export files, then manifest.json (last), under the task's output location
       (task.storage.url + "/" + task.output, or task.output alone when storage is unset);
       file:// and s3:// (SigV4, path-style; set aws_endpoint for S3-compatible stores).
  exit: 0 when the manifest says Succeeded, 1 when it says Failed, 2 when no manifest could be
       written (unreadable task, storage down).

Never log the task: it holds the subject's identifiers and the storage credentials. Log the
request name, the step and the subject's digest only.

The ERP file: {"customers": [{"id": "c-1", "email": "...", "phone": "...", "name": "...",
"orders": [...], "deleted_at": null, "restricted": []}]}. Its path is the --data argument
(the DataSystem's connector.custom.args).
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

CONTRACT_VERSION = "privacy-operator.dev/worker/v1"
TABLE = "customers"


class TaskError(Exception):
    """A failure with a CamelCase reason for the manifest."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason
        self.message = message


def log(task, **fields):
    # Names, steps and the digest only: never identifiers, values or credentials.
    request = task.get("request", {}) if task else {}
    line = {
        "request": request.get("name"),
        "subject": str(request.get("digest", ""))[:19],
        "step": task.get("step") if task else None,
    }
    line.update(fields)
    print(json.dumps(line), file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Output location: file:// or s3://


class Output:
    def __init__(self, task):
        storage = task.get("storage") or {}
        base = storage.get("url") or ""
        output = task.get("output") or ""
        if not output:
            raise TaskError("InvalidTask", "the task has no output location")
        if base:
            self.url = base.rstrip("/") + "/" + output.strip("/")
        elif "://" in output:
            self.url = output
        else:
            self.url = "file://" + output
        self.options = storage.get("options") or {}
        parsed = urllib.parse.urlparse(self.url)
        self.scheme = parsed.scheme
        if self.scheme not in ("file", "s3"):
            raise TaskError(
                "Unsupported", "this example connector writes to file:// and s3:// only"
            )

    def put(self, name, data):
        """Stores `data` (bytes) as `name`, whole or not at all."""
        if self.scheme == "file":
            directory = urllib.parse.urlparse(self.url).path
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + name, suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, os.path.join(directory, name))
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            self._s3_put(name, data)

    def _s3_put(self, name, data):
        parsed = urllib.parse.urlparse(self.url)
        bucket = parsed.netloc
        key = (parsed.path.strip("/") + "/" + name).lstrip("/")
        region = self.options.get("aws_region") or os.environ.get("AWS_REGION", "us-east-1")
        endpoint = self.options.get("aws_endpoint") or f"https://s3.{region}.amazonaws.com"
        access = self.options.get("aws_access_key_id") or os.environ.get("AWS_ACCESS_KEY_ID")
        secret = self.options.get("aws_secret_access_key") or os.environ.get(
            "AWS_SECRET_ACCESS_KEY"
        )
        token = self.options.get("aws_session_token") or os.environ.get("AWS_SESSION_TOKEN")
        if not access or not secret:
            raise TaskError("AccessDenied", "no S3 credentials in the task or the environment")
        url = endpoint.rstrip("/") + "/" + bucket + "/" + urllib.parse.quote(key)
        host = urllib.parse.urlparse(url).netloc
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        payload_hash = hashlib.sha256(data).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        if token:
            headers["x-amz-security-token"] = token
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                "PUT",
                urllib.parse.urlparse(url).path,
                "",
                "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                signed,
                payload_hash,
            ]
        )
        scope = f"{day}/{region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        k = ("AWS4" + secret).encode()
        for part in (day, region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        req = urllib.request.Request(url, data=data, method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            reason = "AccessDenied" if e.code in (401, 403) else "StorageError"
            raise TaskError(reason, f"object storage answered {e.code} for {name}") from None
        except OSError as e:
            raise TaskError("StorageUnreachable", f"object storage: {e.__class__.__name__}") from None


# ---------------------------------------------------------------------------------------------
# The toy system


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise TaskError("DatabaseUnreachable", "the ERP data file does not exist") from None
    except (OSError, ValueError) as e:
        raise TaskError("DatabaseError", f"the ERP data file cannot be read: {e.__class__.__name__}") from None


def save(path, db):
    # Atomic replace: a killed connector leaves the old file, never half a file.
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".partial")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(db, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def digits(s):
    return "".join(c for c in s if c.isdigit())


def matches(customer, ids):
    email = ids.get("email")
    if email and str(customer.get("email", "")).lower() == email.lower():
        return True
    phone = ids.get("phone")
    if phone and digits(str(customer.get("phone", ""))) == digits(phone):
        return True
    for kind in ("userId", "customerId"):
        if ids.get(kind) and customer.get("id") == ids[kind]:
            return True
    return False


def run(task, data_path, out):
    step = task["step"]
    ids = task.get("identifiers") or {}
    db = load(data_path)
    customers = db.setdefault(TABLE, [])
    mine = [c for c in customers if matches(c, ids)]
    manifest = new_manifest(task)
    changed = len(mine)

    if step == "Export":
        body = b"".join(json.dumps(c, sort_keys=True).encode() + b"\n" for c in mine)
        name = TABLE + ".ndjson"
        out.put(name, body)
        manifest["files"].append(
            {
                "path": name,
                "table": TABLE,
                "format": "ndjson",
                "records": len(mine),
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        )
        message = f"exported {len(mine)} record(s)"
    elif step == "SoftDelete":
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
        for c in mine:
            c.setdefault("deleted_at", None)
            if c["deleted_at"] is None:
                c["deleted_at"] = stamp
        message = f"soft-deleted {changed} record(s)"
    elif step == "Restore":
        for c in mine:
            c["deleted_at"] = None
        message = f"restored {changed} record(s)"
    elif step == "Purge":
        db[TABLE] = [c for c in customers if not matches(c, ids)]
        remaining = sum(1 for c in db[TABLE] if matches(c, ids))
        manifest["verification"] = {
            "scannedAt": now(),
            "remaining": {TABLE: remaining},
            "passed": remaining == 0,
        }
        message = f"purged {changed} record(s); verification found {remaining} left"
    elif step == "Rectify":
        allowed = {"name", "phone", "address"}
        for change in task.get("changes") or []:
            if change.get("field") not in allowed:
                raise TaskError("MissingColumn", f"field {change.get('field')!r} cannot be rectified here")
            for c in mine:
                c[change["field"]] = change["value"]
        message = f"rectified {changed} record(s)"
    elif step == "Restrict":
        purposes = task.get("purposes") or []
        for c in mine:
            c["restricted"] = sorted(set(c.get("restricted") or []) | set(purposes))
        message = f"restricted {changed} record(s) for {len(purposes)} purpose(s)"
    else:
        raise TaskError("Unsupported", f"step {step} is not supported by this connector")

    if step != "Export":
        save(data_path, db)
    manifest["tables"][TABLE] = {"rows": changed}
    manifest["message"] = message
    return manifest


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_manifest(task):
    return {
        "version": CONTRACT_VERSION,
        "system": (task.get("system") or {}).get("name", ""),
        "step": task.get("step", ""),
        "outcome": "Succeeded",
        "tables": {},
        "files": [],
        "message": "",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="path of the ERP's JSON data file")
    args = parser.parse_args(argv)

    path = os.environ.get("PRIVACY_OPERATOR_TASK")
    if not path:
        print("PRIVACY_OPERATOR_TASK is not set", file=sys.stderr)
        return 2
    try:
        with open(path, "rb") as f:
            task = json.load(f)
    except (OSError, ValueError) as e:
        # The error names the problem, not the content.
        print(f"cannot read the task file: {e.__class__.__name__}", file=sys.stderr)
        return 2
    if task.get("version") != CONTRACT_VERSION:
        print(f"task version not supported; this connector speaks {CONTRACT_VERSION}", file=sys.stderr)
        return 2
    try:
        out = Output(task)
    except TaskError as e:
        log(task, outcome="Failed", reason=e.reason)
        return 2

    try:
        manifest = run(task, args.data, out)
    except TaskError as e:
        manifest = new_manifest(task)
        manifest.update(outcome="Failed", reason=e.reason, message=e.message)
    try:
        # Last: its presence tells the operator every file it lists is complete.
        out.put("manifest.json", json.dumps(manifest, indent=2).encode())
    except TaskError as e:
        log(task, outcome="Failed", reason=e.reason, detail="manifest not written")
        return 2
    log(task, outcome=manifest["outcome"], reason=manifest.get("reason"))
    return 0 if manifest["outcome"] == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
