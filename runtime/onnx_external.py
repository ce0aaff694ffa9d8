"""Whether an ONNX file keeps tensors in external data files, read from its protobuf bytes.

ONNX lets a tensor's bytes live in another file beside the ``.onnx`` (``data_location:
EXTERNAL``, with the file named in ``external_data``). model.json's sha256 covers the ``.onnx``
only, so the runtime refuses such files (``runtime.model_spec``); this module finds them without
the ``onnx`` package, which a runtime-only install does not have, by walking the protobuf wire
format along the few fields that hold tensors:

    ModelProto.graph (7), .functions (25) -> FunctionProto.node (7)
    GraphProto.node (1), .initializer (5), .sparse_initializer (15)
    NodeProto.attribute (5) -> AttributeProto.t (5), .g (6), .tensors (10), .graphs (11),
                               .sparse_tensor (22), .sparse_tensors (23)
    SparseTensorProto.values (1), .indices (2)
    TensorProto.name (8), .external_data (13), .data_location (14; 1 is EXTERNAL)

Bytes that are not a valid protobuf give None here: ONNX Runtime then refuses them itself, and a
session made from bytes (as the backends make theirs) cannot read external data in any case.
"""

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_MAX_DEPTH = 64  # graphs inside attributes inside graphs...: deeper is not a model anyone exports


class _Malformed(Exception):
    pass


def _varint(buf, pos):
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf):
    """(field number, wire type, value) of one message: a varint's int or a length-delimited
    field's memoryview (no copy); fixed-size fields are skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Malformed
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            continue
        else:  # groups (3, 4) do not occur in ONNX
            raise _Malformed
        yield number, wire, value


def _tensor(buf):
    """The tensor's name when it is external, else None."""
    name, external = "", False
    for number, wire, value in _fields(buf):
        if number == 8 and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif number == 13 and wire == 2 or number == 14 and wire == 0 and value == _EXTERNAL:
            external = True
    return (name or "(unnamed)") if external else None


def _sparse(buf):
    return _first(_tensor(v) for n, w, v in _fields(buf) if n in (1, 2) and w == 2)


def _attribute(buf, depth):
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        found = (_tensor(value) if number in (5, 10) else _graph(value, depth + 1) if number in (6, 11)
                 else _sparse(value) if number in (22, 23) else None)
        if found:
            return found
    return None


def _node(buf, depth):
    return _first(_attribute(v, depth) for n, w, v in _fields(buf) if n == 5 and w == 2)


def _graph(buf, depth):
    if depth > _MAX_DEPTH:
        raise _Malformed
    for number, wire, value in _fields(buf):
        if wire != 2:
            continue
        found = (_node(value, depth) if number == 1 else _tensor(value) if number == 5
                 else _sparse(value) if number == 15 else None)
        if found:
            return found
    return None


def _function(buf):
    return _first(_node(v, 0) for n, w, v in _fields(buf) if n == 7 and w == 2)


def _first(found):
    return next((f for f in found if f), None)


def external_tensor(data):
    """The name of the first tensor of ONNX model bytes ``data`` whose bytes are kept in an
    external data file, or None (none found, or bytes that are not an ONNX protobuf)."""
    try:
        view = memoryview(data)
        return _first(_graph(v, 0) if n == 7 else _function(v)
                      for n, w, v in _fields(view) if w == 2 and n in (7, 25))
    except _Malformed:
        return None
