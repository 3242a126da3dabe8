"""The few error types of the service; app.py turns each into one HTTP status."""


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
