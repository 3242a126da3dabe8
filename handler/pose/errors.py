"""The few error types of the service; app.py turns each into one HTTP status, and a batch (pose/records.py,
batch.py) each into a photo's error record with its code."""


class PoseError(Exception):
    """Base class: a message safe to show to the caller, an HTTP status, and optionally a cause for
    the logs only (what raised, never request data)."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.message = message
        self.cause = cause


class BadRequest(PoseError):
    """The request cannot be read: bad JSON, bad base64, missing image."""

    status = 400
    code = "bad_request"


class TooLarge(PoseError):
    """The image is over the byte or pixel limit."""

    status = 413
    code = "too_large"


class UnsupportedImage(PoseError):
    """The bytes are not an image we can decode (or not one of the accepted formats)."""

    status = 415
    code = "unsupported_image"


class BadParameter(PoseError):
    """A parameter has the wrong type or is out of range."""

    status = 422
    code = "bad_parameter"


class ModelError(PoseError):
    """The served model is missing, corrupt or has no valid card. Raised at cold start."""

    status = 500
    code = "model_error"


class PhotoError(PoseError):
    """What keeps one photo of an S3 batch from its result, other than its bytes: S3 or the batch's clock
    (batch.py). Only ever that photo's error record, never an HTTP reply."""


class NotFound(PhotoError):
    """The photo's object is gone (deleted after the listing)."""

    code = "not_found"


class Forbidden(PhotoError):
    """S3 denies the function the photo's object."""

    code = "forbidden"


class Unreadable(PhotoError):
    """S3 has the object but will not give it to a plain GET: archived, or encrypted with a customer key."""

    code = "unreadable"


class KeyTooLong(PhotoError):
    """A result key of the photo would pass S3's limit on a key."""

    code = "key_too_long"


class WriteFailed(PhotoError):
    """S3 refused a result object of the photo."""

    code = "write_failed"


class TimedOut(PhotoError):
    """The batch had no time left to start the photo."""

    code = "timeout"


class WorkerDied(PhotoError):
    """The folder batch's worker process died on the photo twice (out of memory, a signal; local/batch.py)."""

    code = "worker_died"
