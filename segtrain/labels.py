"""The label convention every layer shares: class indices 0..254, and ``VOID`` (255).

Decoding maps a dataset's own void value to ``VOID``; losses, metrics and augmentation
(mask padding) ignore it. It lives on the ground floor, with no imports, so that the
data package and the NumPy metrics can both depend on it without depending on each other.
"""

VOID = 255
