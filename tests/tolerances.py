"""Every numerical tolerance the tests use, defined once, with the reason for each.

float64 is the sharp test: two computations of the same formula differ only in
the order of their reductions, about 1e-16 relative per operation, so 1e-12
leaves room for a few hundred accumulated roundings and still catches any real
difference (a wrong sign, a missing term, a transposed weight).

float32 is the realistic one: XLA and NumPy reduce in different orders, so the
same value can differ by about 1e-7 relative per reduction, and a LeNet forward
pass chains five of them.
"""

F64_RTOL = 1e-12
F64_ATOL = 1e-12  # for values near zero, where a relative bound means nothing

F32_RTOL = 1e-5
F32_ATOL = 1e-6

# Init statistics: a uniform(-b, b) sample of n values has a standard deviation of
# b / sqrt(3) and the relative standard error of its estimate is about 0.75 / sqrt(n);
# 6 standard errors at n >= 10,000 is 4.5%, so 5% fails only on a wrong bound.
INIT_STD_RTOL = 0.05
