"""Arrow columns to and from numpy without pandas, for the dbt Python models (dbt_project/models/marts/*.py).

pyarrow's ``to_numpy`` and ``pa.array`` import pandas, half a second of a cold dbt run, so these read and build
the Arrow buffers directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = ["arrow_column", "numpy_values"]


def numpy_values(column: pa.ChunkedArray, dtype: type[np.float64] | type[np.int64]) -> npt.NDArray[Any]:
    """A float64 or int64 Arrow column without nulls as numpy of that dtype, read from its value buffer."""
    array = column.combine_chunks()
    assert array.null_count == 0
    if len(array) == 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset : array.offset + len(array)]


def arrow_column(values: npt.NDArray[Any] | list[str | None]) -> pa.Array:
    """A float64 or int64 array, or a list of str, as an Arrow column with NaN and None as null, as a pandas frame
    is written."""
    if isinstance(values, list):
        encoded = [b"" if value is None else value.encode() for value in values]
        offsets = np.zeros(len(values) + 1, dtype=np.int32)
        offsets[1:] = np.cumsum([len(value) for value in encoded], dtype=np.int64)
        missing = np.array([value is None for value in values], dtype=bool)
        buffers = [pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
        arrow_type = pa.string()
    else:
        floats = np.asarray(values).dtype.kind == "f"
        numbers = np.ascontiguousarray(values, dtype=np.float64 if floats else np.int64)
        missing = np.isnan(numbers) if floats else np.zeros(len(numbers), dtype=bool)
        buffers = [pa.py_buffer(numbers)]
        arrow_type = pa.float64() if floats else pa.int64()
    validity = pa.py_buffer(np.packbits(~missing, bitorder="little")) if missing.any() else None
    return pa.Array.from_buffers(arrow_type, len(missing), [validity, *buffers], int(missing.sum()))
