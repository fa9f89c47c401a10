"""ONNX graph rewrites that keep an exported segtrain model portable across runtimes.

tf2onnx's output runs in onnxruntime, but a few of its patterns compute wrong values in
OpenCV DNN (5.0), the runtime most deployments of a segmentation model use. Each rewrite
here replaces one such pattern with an equivalent one both runtimes agree on; every one
is covered by a test in tests/test_export.py, and docs/export.md lists them:

- ``unfuse_pointwise_pads``: zero padding that tf2onnx fused into a 1x1 Conv is split
  back out into a Pad node.
- ``adjacent_reductions``: ReduceMean & co. over non-adjacent axes (GroupNormalization's
  [1, 2, 4]) get the reduced axes transposed to the end first.

Only ``onnx`` and NumPy are needed (no TensorFlow).
"""

from __future__ import annotations

import numpy as np


def make_portable(proto):
    """Apply every rewrite to an ONNX ``ModelProto`` (shape inference first, for the ranks)."""
    import onnx  # optional dependency: onnx

    proto = onnx.shape_inference.infer_shapes(proto)
    graph = Graph(proto)
    unfuse_pointwise_pads(graph)
    adjacent_reductions(graph)
    graph.commit()
    return proto


class Graph:
    """Minimal mutable view of an ONNX graph: node list, consumers, ranks, fresh names."""

    def __init__(self, proto):
        self.proto = proto
        self.graph = proto.graph
        self.nodes = list(self.graph.node)
        self.ranks = {}
        for info in [*self.graph.input, *self.graph.value_info, *self.graph.output]:
            t = info.type.tensor_type
            if t.HasField("shape"):
                self.ranks[info.name] = len(t.shape.dim)
        self._count = 0

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}__portable{self._count}"

    def const(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper  # optional dependency: onnx

        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def consumers(self, name: str) -> list:
        return [n for n in self.nodes if name in n.input]

    def replace(self, old: list, new: list) -> None:
        at = min(self.nodes.index(n) for n in old)
        self.nodes = [n for n in self.nodes if all(n is not o for o in old)]
        self.nodes[at:at] = new

    def commit(self) -> None:
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        used = {i for n in self.nodes for i in n.input}
        kept = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)


def _attr(node, name: str, default=None):
    from onnx import helper  # optional dependency: onnx

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node, name: str, value) -> None:
    from onnx import helper  # optional dependency: onnx

    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def unfuse_pointwise_pads(g: Graph) -> None:
    """Split zero padding fused into a 1x1 Conv back out into a Pad node (OpenCV 5 computes the fused form wrongly)."""
    from onnx import helper  # optional dependency: onnx

    for conv in [n for n in g.nodes if n.op_type == "Conv"]:
        kernel, pads = _attr(conv, "kernel_shape"), _attr(conv, "pads")
        if not kernel or any(k != 1 for k in kernel) or not pads or not any(pads):
            continue
        rank = len(kernel)
        full = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
        padded = g.fresh(conv.name + "/pad")
        pad = helper.make_node("Pad", [conv.input[0], g.const(conv.name + "/pads", np.array(full, np.int64))],
                               [padded], name=padded, mode="constant")
        conv.input[0] = padded
        _set_attr(conv, "pads", [0] * len(pads))
        g.replace([conv], [pad, conv])


_REDUCTIONS = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceLogSumExp")


def adjacent_reductions(g: Graph) -> None:
    """Transpose the axes of a reduction over non-adjacent axes to the end (OpenCV 5 computes those wrongly)."""
    from onnx import helper  # optional dependency: onnx

    for node in [n for n in g.nodes if n.op_type in _REDUCTIONS]:
        axes, rank = _attr(node, "axes"), g.ranks.get(node.input[0])
        if not axes or rank is None:
            continue
        axes = sorted(a % rank for a in axes)
        if axes == list(range(axes[0], axes[0] + len(axes))):
            continue
        kept = [a for a in range(rank) if a not in axes]
        perm = kept + axes
        moved = g.fresh(node.name + "/axes_last")
        new = [helper.make_node("Transpose", [node.input[0]], [moved], name=moved, perm=perm)]
        node.input[0] = moved
        _set_attr(node, "axes", list(range(len(kept), rank)))
        new.append(node)
        if _attr(node, "keepdims", 1):
            out = node.output[0]
            reduced = g.fresh(node.name + "/reduced")
            node.output[0] = reduced
            new.append(helper.make_node("Transpose", [reduced], [out], name=g.fresh(node.name + "/axes_back"),
                                        perm=np.argsort(perm).tolist()))
        g.replace([node], new)


def rename_tensor(proto, old: str, name: str) -> None:
    """Rename graph input/output tensor ``old`` (tf2onnx keeps TF's ``image:0`` / ``Identity:0``)."""
    for node in proto.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name == old:
            value.name = name
