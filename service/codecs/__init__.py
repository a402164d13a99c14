"""Turning instances into graph inputs, per modality: `image` decodes images and arrays for image models, `text`
tokenizes texts for text models. Both raise `CodecError` with a client-facing reason."""

from service.codecs.errors import CodecError
from service.codecs.image import check_values, decode_array, decode_base64, decode_image, numeric_array
from service.codecs.text import TextEncoder, TokenBatch, check_text

__all__ = [
    "CodecError",
    "TextEncoder",
    "TokenBatch",
    "check_text",
    "check_values",
    "decode_array",
    "decode_base64",
    "decode_image",
    "numeric_array",
]
