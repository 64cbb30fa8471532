"""The fields of a batch that are not its file: where the file and the results go, expiry.

Each takes the form's fields as strings (a JSON body is turned into the same first), and
raises InvalidRequest (422) naming the field and what would be accepted.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile

from api.fetch_input import check_output_url
from shared.config import Settings
from shared.errors import InvalidRequest

_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def input_url(fields: dict[str, str], upload: UploadFile | None) -> str | None:
    """Return the `input_url` to fetch (None: the upload), or refuse both or neither."""
    url = fields.get("input_url") or None
    if url is not None and upload is not None:
        raise InvalidRequest(
            "Give the file as `file` or as `input_url`, not both.",
            errors=[{"field": "input_url", "message": "not with file"}],
        )
    if url is None and upload is None:
        raise InvalidRequest(
            "The request has no file: upload it in field `file`, or give `input_url` "
            "(curl -F file=@feedback.csv -F task=sentiment).",
            errors=[{"field": "file", "message": "required (or input_url)"}],
        )
    return url


def output(fields: dict[str, str], settings: Settings) -> tuple[str, bool] | None:
    """Return the checked `output_url` and whether to gzip, or None without one."""
    url = fields.get("output_url") or None
    raw_gzip = fields.get("output_gzip", "").strip().lower()
    if raw_gzip not in _TRUE | _FALSE:
        raise InvalidRequest(
            f"output_gzip must be true or false, not {fields['output_gzip']!r}",
            errors=[{"field": "output_gzip", "message": "true or false"}],
        )
    if url is None:
        if raw_gzip in _TRUE:
            raise InvalidRequest(
                "output_gzip needs an output_url",
                errors=[{"field": "output_gzip", "message": "needs an output_url"}],
            )
        return None
    check_output_url(url, settings)
    return url, raw_gzip in _TRUE


def expires_after_s(fields: dict[str, str]) -> int | None:
    """Return `expires_after_s` as seconds, or None; refuse anything but a positive integer."""
    raw = fields.get("expires_after_s")
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1 or len(raw) > 10:
        raise InvalidRequest(
            f"expires_after_s must be a positive whole number of seconds, not {raw!r}",
            errors=[{"field": "expires_after_s", "message": "a positive integer"}],
        )
    return int(raw)
