"""The layout table, re-exported: it lives in :mod:`jaxnets.torch_layout` so that jaxnets can read torch weights.

``parity.layout`` keeps working for existing code; new code may import either.
"""

from jaxnets.interop.torch_layout import Entry as Entry
from jaxnets.interop.torch_layout import StateDictMismatch as StateDictMismatch
from jaxnets.interop.torch_layout import check_state_dict as check_state_dict
from jaxnets.interop.torch_layout import layout as layout
from jaxnets.interop.torch_layout import to_nchw as to_nchw
from jaxnets.interop.torch_layout import to_nhwc as to_nhwc
