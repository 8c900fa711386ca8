"""Feature maps that turn a kernel into a dot product, one module per problem.

Each module writes a kernel k(a, b), or a function of a dot product, as
phi(a) . psi(b) with phi, psi: R^D -> R^M, exactly or as an unbiased
estimate, so that an N x N matrix of kernel values becomes a product of two
N x M matrices. The three modules serve three problems of the Data Mining
projects (chapters/data_mining):

- :mod:`lib.features.polynomial`, Problem 2 (a Performer for (q . k)^4):
  exact tensor-power and symmetric features of the polynomial kernel
  (q . k)^p, and random product features with their exact variance
  (Choromanski et al., ICLR 2021).
- :mod:`lib.features.gelu`, Problem 3 (linearising y = GELU(W x)):
  GELU(w . x) ~ phi(w) . psi(x) by exact features of a fitted polynomial, and
  unbiased random Maclaurin features (Kar and Karnick, 2012; Sehanobish
  et al., 2024).
- :mod:`lib.features.ball`, Problem 4 (smoothed local attention in R^3):
  the ball-overlap kernel and its non-negative, exactly local, unbiased ball
  features with uniform or importance-sampled centres.

Import from the module that serves the problem, e.g.
``from lib.features.polynomial import symmetric_power_features``.
"""
