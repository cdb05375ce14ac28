/* Y(M,N) = alpha * op(A) op(B) + beta * C, op(A) is (M,K), op(B) is (K,N): mt_gemm.
 * A is (M,K), or (K,M) when transA; B is (K,N), or (N,K) when transB.
 * C (optional, NULL for none; beta = 0: not read) is read at C[m*csm + n*csn]: strides of 0
 * broadcast a bias. C may alias Y (accumulate into Y with beta = 1: the fused SGD update), so Y
 * and C are not restrict; A and B never alias Y.
 * Two implementations with one interface (mt_common.h, MT_SIMD): register tiles of vectors for
 * cores with a vector unit, scalar rows for microcontrollers. */
#ifndef MT_GEMM_H
#define MT_GEMM_H
#include "../mt_common.h"
#if MT_SIMD
#include "gemm_tiles.h"
#else
#include "gemm_rows.h"
#endif
#endif
