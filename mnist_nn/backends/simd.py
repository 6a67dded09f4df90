"""The jit kernel's low-level helpers, written as Numba intrinsics (LLVM IR emitted directly).

* ``add_sparse_rows`` and ``subtract_sparse_outer``: the sparse first layer's forward sum and update.
* ``sigmoid_rows_float32``: rows of float32 sigmoids with a vectorized polynomial exp.
* ``square_root``: LLVM's sqrt of one float, which the loop vectorizer turns into vector square roots.
* ``prefetch_range``: start loading an upcoming image's pixels into cache.
* ``read_fp_control`` / ``write_fp_control``: flush denormals to zero inside the kernels (x86).

Why the row helpers exist: in the one-hidden-layer kernel the first layer is a sum over the ~150 non-zero
pixels of an image of rows of w1t (z += x_k w1t[k, :]), and the update is the same loop writing
back (w1t[k, :] -= step_k delta). Written as plain Numba loops, LLVM must assume the rows it reads
may overlap the row it writes (Numba cannot mark arrays ``noalias``), so it keeps the running sum in
memory and re-checks aliasing for every 32-wide row: about 12 cycles per pixel. These helpers emit
the loop over pixels directly in LLVM IR with the running sums held in vector registers, one "chunk"
of two 64-byte vectors (32 float32 or 16 float64 numbers) at a time, so a pixel costs a few cycles.

The arithmetic is the same as the plain loops (multiply, then add, which LLVM may fuse); LLVM lowers
the vector types to whatever the CPU has (AVX2, AVX-512, NEON). The row width (``w.shape[1]``)
must be a multiple of ``CHUNK_ELEMENTS``; the kernel pads the hidden layer with zero units to ensure it.
"""

from __future__ import annotations

from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

VECTOR_BYTES = 64  # one AVX-512 register; on AVX2 or NEON LLVM splits it (measured: 12% faster than 32 here)
VECTORS_PER_CHUNK = 2
INTERLEAVED_SUMS = 2  # running sums per vector in add_sparse_rows
CHUNK_ELEMENTS = 32  # a row width that is a multiple of this suits float32 (16 lanes) and float64 (8)


FLAGS = ("contract",)  # let LLVM fuse multiply and add, as fastmath does in the plain kernels


def _i64(value: int):
    return ir.Constant(ir.IntType(64), value)


def _lanes(context, dtype):
    return VECTOR_BYTES // context.get_abi_sizeof(context.get_data_type(dtype))


def _row_pointer(context, builder, array_type, array_value, row, column):
    """Pointer to element [row, column] of a C-contiguous 2-D array, and the element type."""
    array = context.make_array(array_type)(context, builder, array_value)
    _, width = cgutils.unpack_tuple(builder, array.shape, 2)
    offset = builder.add(builder.mul(row, width), column)
    return builder.gep(array.data, [offset]), width


def _vector_pointer(builder, pointer, offset, vector_type):
    return builder.bitcast(builder.gep(pointer, [offset]), vector_type.as_pointer())


def _splat(builder, scalar, vector_type):
    lanes = vector_type.count
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _pixel(context, builder, signature, args, indices_at, values_at, table_at, p):
    """(k, x_k) of non-zero number p: its column (as intp) and its value, values[p] or, with a value
    table, table[values[p]]."""
    indices = context.make_array(signature.args[indices_at])(context, builder, args[indices_at])
    values = context.make_array(signature.args[values_at])(context, builder, args[values_at])
    column = builder.load(builder.gep(indices.data, [p]))
    signed = signature.args[indices_at].dtype.signed
    k = (builder.sext if signed else builder.zext)(column, ir.IntType(64))
    value = builder.load(builder.gep(values.data, [p]))
    if isinstance(signature.args[table_at], types.Array):
        table = context.make_array(signature.args[table_at])(context, builder, args[table_at])
        value = builder.load(builder.gep(table.data, [builder.zext(value, ir.IntType(64))]))
    return k, value


def _check(out, w, indices, values, table):
    ok = (isinstance(out, types.Array) and isinstance(w, types.Array) and out.ndim == 2 and w.ndim == 2
          and out.dtype == w.dtype and out.layout == w.layout == "C"
          and isinstance(indices, types.Array) and indices.dtype in (types.int32, types.uint16)
          and isinstance(values, types.Array) and values.ndim == 1)
    if isinstance(table, types.NoneType):
        ok = ok and values.dtype == out.dtype
    else:
        ok = (ok and isinstance(table, types.Array) and table.ndim == 1 and table.dtype == out.dtype
              and isinstance(values.dtype, types.Integer) and not values.dtype.signed)
    if not ok:
        raise TypeError("simd helpers take C-contiguous 2-D arrays of one float dtype, int32 or uint16 indices, "
                        "and values of that dtype (table None) or unsigned codes into a table of it")


@intrinsic
def add_sparse_rows(typingctx, out, out_row, w, indices, values, start, end, table):
    """out[out_row, :] += sum over p in [start, end) of x_p * w[indices[p], :], where x_p is values[p]
    (``table`` None) or table[values[p]]."""
    _check(out, w, indices, values, table)
    signature = types.void(out, out_row, w, indices, values, start, end, table)

    def codegen(context, builder, sig, args):
        elem = context.get_data_type(sig.args[0].dtype)
        vec = ir.VectorType(elem, _lanes(context, sig.args[0].dtype))
        align = context.get_abi_sizeof(elem)
        row = context.cast(builder, args[1], sig.args[1], types.intp)
        first = context.cast(builder, args[5], sig.args[5], types.intp)
        last = context.cast(builder, args[6], sig.args[6], types.intp)
        out_ptr, width = _row_pointer(context, builder, sig.args[0], args[0], row, _i64(0))
        w_array = context.make_array(sig.args[2])(context, builder, args[2])
        chunk = vec.count * VECTORS_PER_CHUNK
        # Independent running sums for interleaved pixels (p, p+1, ...): one chain of dependent adds
        # waits 4 cycles per pixel for the previous add, two chains keep the FMA units busy (measured:
        # the forward pass alone ~20% faster, an epoch ~5%).
        sums = [[cgutils.alloca_once(builder, vec) for _ in range(VECTORS_PER_CHUNK)]  # promoted to registers
                for _ in range(INTERLEAVED_SUMS)]
        pairs = builder.udiv(builder.sub(last, first), _i64(INTERLEAVED_SUMS))
        after_pairs = builder.add(first, builder.mul(pairs, _i64(INTERLEAVED_SUMS)))

        def accumulate(chunk_sums, p, column):
            k, x = _pixel(context, builder, sig, args, 3, 4, 7, p)
            x_vec = _splat(builder, x, vec)
            w_row = builder.gep(w_array.data, [builder.add(builder.mul(k, width), column)])
            for v, acc in enumerate(chunk_sums):
                weights = builder.load(_vector_pointer(builder, w_row, _i64(v * vec.count), vec), align=align)
                builder.store(builder.fadd(builder.load(acc), builder.fmul(x_vec, weights, flags=FLAGS),
                                           flags=FLAGS), acc)

        with cgutils.for_range(builder, builder.udiv(width, _i64(chunk))) as c:
            column = builder.mul(c.index, _i64(chunk))
            for chunk_sums in sums:
                for acc in chunk_sums:
                    builder.store(ir.Constant(vec, None), acc)
            with cgutils.for_range(builder, pairs) as pair:
                p = builder.add(first, builder.mul(pair.index, _i64(INTERLEAVED_SUMS)))
                for i, chunk_sums in enumerate(sums):
                    accumulate(chunk_sums, builder.add(p, _i64(i)), column)
            with cgutils.for_range(builder, last, start=after_pairs) as leftover:
                accumulate(sums[0], leftover.index, column)
            out_chunk = builder.gep(out_ptr, [column])
            for v in range(VECTORS_PER_CHUNK):
                total = builder.load(sums[0][v])
                for chunk_sums in sums[1:]:
                    total = builder.fadd(total, builder.load(chunk_sums[v]))
                target = _vector_pointer(builder, out_chunk, _i64(v * vec.count), vec)
                builder.store(builder.fadd(builder.load(target, align=align), total), target, align=align)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def subtract_sparse_outer(typingctx, w, delta, delta_row, indices, values, start, end, scale, table):
    """w[indices[p], :] -= (scale * x_p) * delta[delta_row, :] for every p in [start, end), x_p as in
    add_sparse_rows."""
    _check(delta, w, indices, values, table)
    signature = types.void(w, delta, delta_row, indices, values, start, end, scale, table)

    def codegen(context, builder, sig, args):
        dtype = sig.args[0].dtype
        elem = context.get_data_type(dtype)
        vec = ir.VectorType(elem, _lanes(context, dtype))
        align = context.get_abi_sizeof(elem)
        row = context.cast(builder, args[2], sig.args[2], types.intp)
        first = context.cast(builder, args[5], sig.args[5], types.intp)
        last = context.cast(builder, args[6], sig.args[6], types.intp)
        scale = context.cast(builder, args[7], sig.args[7], dtype)
        delta_ptr, width = _row_pointer(context, builder, sig.args[1], args[1], row, _i64(0))
        w_array = context.make_array(sig.args[0])(context, builder, args[0])
        chunk = vec.count * VECTORS_PER_CHUNK
        with cgutils.for_range(builder, builder.udiv(width, _i64(chunk))) as c:
            column = builder.mul(c.index, _i64(chunk))
            delta_chunk = builder.gep(delta_ptr, [column])
            deltas = [builder.load(_vector_pointer(builder, delta_chunk, _i64(v * vec.count), vec), align=align)
                      for v in range(VECTORS_PER_CHUNK)]
            with cgutils.for_range(builder, last, start=first) as pixel:
                k, x = _pixel(context, builder, sig, args, 3, 4, 8, pixel.index)
                step = _splat(builder, builder.fmul(scale, x), vec)
                w_row = builder.gep(w_array.data, [builder.add(builder.mul(k, width), column)])
                for v, d in enumerate(deltas):
                    target = _vector_pointer(builder, w_row, _i64(v * vec.count), vec)
                    builder.store(builder.fsub(builder.load(target, align=align), builder.fmul(step, d, flags=FLAGS),
                                               flags=FLAGS), target, align=align)
        return context.get_dummy_value()

    return signature, codegen


# --------------------------------------------------------------------------- denormals

# MXCSR bits: FTZ (flush results that would be denormal to zero) and DAZ (read denormal inputs as zero).
FLUSH_DENORMALS = 0x8040
_X86 = llvm_binding.get_process_triple().split("-")[0] in ("x86_64", "i386", "i686")


def _mxcsr_call(builder, name, slot):
    function_type = ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8))])
    function = cgutils.get_or_insert_function(builder.module, function_type, name)
    builder.call(function, [builder.bitcast(slot, ir.PointerType(ir.IntType(8)))])


@intrinsic
def read_fp_control(typingctx):
    """The SSE control register (MXCSR) on x86; 0 elsewhere."""

    def codegen(context, builder, sig, args):
        if not _X86:
            return ir.Constant(ir.IntType(32), 0)
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.load(slot)

    return types.uint32(), codegen


@intrinsic
def write_fp_control(typingctx, value):
    """Set the SSE control register (MXCSR) on x86; a no-op elsewhere.

    The kernels set FLUSH_DENORMALS on entry and restore the caller's value on exit: late in training
    some sigmoid units saturate and their tiny derivatives (below 1e-38 in float32) would otherwise
    take a microcode slow path on every multiply, about 30% of an epoch here. Flushing them to zero
    changes nothing a float32 or float64 weight can hold.
    """

    def codegen(context, builder, sig, args):
        if _X86:
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(context.cast(builder, args[0], sig.args[0], types.uint32), slot)
            _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()

    return types.void(value), codegen


# --------------------------------------------------------------------------- prefetch

CACHE_LINE = 64


@intrinsic
def square_root(typingctx, x):
    """sqrt(x) as ``llvm.sqrt`` (NaN for x < 0, as np.sqrt). Numba compiles np.sqrt of one float32 to a
    call of libm's ``sqrtf``, which LLVM may not vectorize (errno); measured: Adam's update loop ran
    scalar, about 4x slower."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        llvm_type = context.get_data_type(sig.args[0])
        function = builder.module.declare_intrinsic("llvm.sqrt", [llvm_type])
        return builder.call(function, [args[0]])

    return x(x), codegen


@intrinsic
def prefetch_range(typingctx, array, start, end):
    """Ask the CPU to start loading array[start:end] (1-D) into cache; it has no other effect.

    The epoch visits images in a random order, so the first bytes of each image's non-zero pixels
    are a cache miss to main memory; issued one image ahead, the wait overlaps useful work.
    """
    if not (isinstance(array, types.Array) and array.ndim == 1):
        raise TypeError("prefetch_range takes a 1-D array")

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        first = context.cast(builder, args[1], sig.args[1], types.intp)
        last = context.cast(builder, args[2], sig.args[2], types.intp)
        itemsize = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        per_line = max(1, CACHE_LINE // itemsize)
        count = builder.sdiv(builder.add(builder.sub(last, first), _i64(per_line - 1)), _i64(per_line))
        i8p = ir.PointerType(ir.IntType(8))
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)]),
            "llvm.prefetch.p0")
        with cgutils.for_range(builder, count) as line:
            element = builder.add(first, builder.mul(line.index, _i64(per_line)))
            pointer = builder.bitcast(builder.gep(ary.data, [element]), i8p)
            # read, keep in all cache levels, data cache
            builder.call(function, [pointer, ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 3),
                                    ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return types.void(array, start, end), codegen


# --------------------------------------------------------------------------- sigmoid of a float32 row

# Cephes expf: e^x = 2^n * P(r), x = n ln2 + r; within a few ulp of libm's expf on [-87, 88].
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
             5.0000001201e-1)


SIGMOID_LANES = 8  # float32 numbers per vector of the sigmoid (one AVX register)


@intrinsic
def sigmoid_rows_float32(typingctx, array, first_row, rows):
    """array[first_row:first_row+rows, :] = sigmoid(the same), for a C-contiguous float32 2-D array.

    The row width must be a multiple of SIGMOID_LANES (the kernel pads its hidden and output rows for
    this). The same stable form as functions.sigmoid, e = e^-|z|, sigma = (1 if z >= 0 else e) / (1 + e),
    with e^x computed by the polynomial above in vector registers: libm's expf is one call per number,
    and the 40 exponentials of each image were about 15% of an epoch.
    """
    if not (isinstance(array, types.Array) and array.dtype == types.float32 and array.ndim == 2
            and array.layout == "C"):
        raise TypeError("sigmoid_rows_float32 takes a C-contiguous 2-D float32 array")

    def codegen(context, builder, sig, args):
        f32, i32 = ir.FloatType(), ir.IntType(32)
        vec, ivec = ir.VectorType(f32, SIGMOID_LANES), ir.VectorType(i32, SIGMOID_LANES)

        def const(value):
            return ir.Constant(vec, [float(value)] * SIGMOID_LANES)

        start, width = _row_pointer(context, builder, sig.args[0], args[0],
                                    context.cast(builder, args[1], sig.args[1], types.intp), _i64(0))
        count = builder.mul(context.cast(builder, args[2], sig.args[2], types.intp), width)
        unary = ir.FunctionType(vec, [vec])
        floor = cgutils.get_or_insert_function(builder.module, unary, f"llvm.floor.v{SIGMOID_LANES}f32")
        fabs = cgutils.get_or_insert_function(builder.module, unary, f"llvm.fabs.v{SIGMOID_LANES}f32")
        with cgutils.for_range(builder, builder.udiv(count, _i64(SIGMOID_LANES))) as block:
            pointer = _vector_pointer(builder, start, builder.mul(block.index, _i64(SIGMOID_LANES)), vec)
            z = builder.load(pointer, align=4)
            x = builder.fsub(const(0), builder.call(fabs, [z]))  # -|z| <= 0
            underflow = builder.fcmp_ordered("<", x, const(-87.3))  # e^x below float32's normal range
            x = builder.select(underflow, const(-87.3), x)
            n = builder.call(floor, [builder.fadd(builder.fmul(x, const(1.44269504088896341)), const(0.5))])
            r = builder.fsub(builder.fsub(x, builder.fmul(n, const(0.693359375))), builder.fmul(n, const(-2.12194440e-4)))
            p = const(_EXP_POLY[0])
            for c in _EXP_POLY[1:]:
                p = builder.fadd(builder.fmul(p, r), const(c))
            poly = builder.fadd(builder.fadd(builder.fmul(builder.fmul(p, r), r), r), const(1))
            exponent = builder.shl(builder.add(builder.fptosi(n, ivec), ir.Constant(ivec, [127] * SIGMOID_LANES)),
                                   ir.Constant(ivec, [23] * SIGMOID_LANES))
            e = builder.select(underflow, const(0), builder.fmul(poly, builder.bitcast(exponent, vec)))
            numerator = builder.select(builder.fcmp_ordered(">=", z, const(0)), const(1), e)
            builder.store(builder.fdiv(numerator, builder.fadd(const(1), e)), pointer, align=4)
        return context.get_dummy_value()

    return types.void(array, first_row, rows), codegen
