# fastflow._core: the native core, one extension module built from the
# files included below (uvloop's layout), so that every part can call every
# other at C level.
#
# Only fastflow.errors is imported from the package: it is the leaf module of
# exception classes, shared with the pure-Python reference core.

import os

from fastflow.errors import FastflowError, SubjectError

include "consts.pxi"
include "subjects.pxi"
include "buffers.pxi"
include "matcher.pxi"
include "log.pxi"

include "buffers.pyx"
include "subjects.pyx"
include "matcher.pyx"
include "log.pyx"
include "segments.pyx"

COMPILED = True
DEBUG = bool(FASTFLOW_DEBUG)
