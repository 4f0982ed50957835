"""zcoll.reference: the numpy oracle of docs/arithmetic.md (no torch needed).

Given every rank's input, it returns what every rank must hold after a collective, for the
named algorithm and codec. Native results are compared with it bit for bit.
"""
from .codecs import CODECS, DEFAULT_BLOCK, decode, encode, encoded_bytes, residual, roundtrip
from .collectives import (ALL_REDUCE_ALGOS, COMPRESSED_ALGOS, REDUCE_ALGOS, REDUCE_SCATTER_ALGOS,
                          all_gather, all_reduce, broadcast, reduce, reduce_scatter)
from .dtypes import (DTYPES, bf16_bits_to_float32, float16_to_float32, float32_to_bf16_bits,
                     float32_to_float16)
from .hashing import GATHER_STAGE, element_hash, stream_key, uniform
from .ops import ReduceOp
from .partition import partition, uncompressed_align

__all__ = [
    "ALL_REDUCE_ALGOS", "CODECS", "COMPRESSED_ALGOS", "DEFAULT_BLOCK", "DTYPES", "GATHER_STAGE",
    "REDUCE_ALGOS", "REDUCE_SCATTER_ALGOS", "ReduceOp", "all_gather", "all_reduce",
    "bf16_bits_to_float32", "broadcast", "decode", "element_hash", "encode", "encoded_bytes",
    "float16_to_float32", "float32_to_bf16_bits", "float32_to_float16", "partition", "reduce",
    "reduce_scatter", "residual", "roundtrip", "stream_key", "uncompressed_align", "uniform",
]
