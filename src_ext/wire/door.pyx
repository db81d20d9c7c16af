# The input side every front door shares: DoorParser buffers bytes fed in
# any pieces, bounds them and checks publish permissions; each protocol's
# parser (native_in.pyx, nats_in.pyx, http_in.pyx) cuts its own ops.

@cython.auto_pickle(False)     # engine state: not picklable
cdef class DoorParser:
    """The input side of a front door's parser (FrameParser: the native
    protocol; NatsParser: NATS): bytes fed in any pieces are kept until an
    op is complete, ``_parse`` (the subclass) handles the complete ones and
    routes PUBs to ``router`` in C; the state both doors share (limits,
    publish permissions, counters, the last PUB subject) lives here.

    ``feed(data)`` returns the entries for what it completed; a malformed
    stream raises the door's error (its ``frames``: the entries handled
    before it), and the parser then refuses more input."""

    def __dealloc__(self):
        free(self.buf)
        free(self.rec)

    @property
    def buffered(self):
        """Bytes of an incomplete op held."""
        return self.n

    def feed(self, data):
        return self._feed(data)

    cdef list _feed(self, object data):
        cdef Py_buffer view
        cdef list out = []
        cdef Py_ssize_t used
        if self.failed is not None:
            raise self._malformed_before()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.bytes_in += view.len
            if self.n == 0:
                self.need = 0
                used = self._parse(<const char *>view.buf, view.len, out)
                if used < view.len:
                    self._keep(<const char *>view.buf + used, view.len - used)
            else:
                self._keep(<const char *>view.buf, view.len)
                if self.need and self.n < self.need:
                    return out          # a payload still arriving: nothing to parse yet
                self.need = 0
                used = self._parse(self.buf, self.n, out)
                if used:
                    memmove(self.buf, self.buf + used, self.n - used)
                    self.n -= used
        except (ProtocolError, NatsError, HttpError, MqttError) as exc:
            # the ops before the bad one were handled: hand them over too;
            # the stream cannot be resynchronised, so the parser stops here
            exc.frames = out
            self.failed = exc
            self.n = 0
            raise
        finally:
            PyBuffer_Release(&view)
        return out

    cdef int _keep(self, const char *p, Py_ssize_t n) except -1:
        _grow(<void **>&self.buf, &self.cap, self.n + n, 1, 4096)
        memcpy(self.buf + self.n, p, n)
        self.n += n
        return 0

    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1:
        """Handle the complete ops of p[:n]; returns the bytes used."""
        raise NotImplementedError

    cdef object _malformed_before(self):
        raise NotImplementedError

    cdef object _pub_subject(self, const char *s, Py_ssize_t sn):
        """The str of a PUB subject (a stream of one subject: decoded once)."""
        if (self.last_pb is not None and sn == PyBytes_GET_SIZE(self.last_pb)
                and memcmp(PyBytes_AS_STRING(self.last_pb), s, sn) == 0):
            return self.last_ps
        subject = self._subject_str(s, sn)
        self.last_pb = PyBytes_FromStringAndSize(s, sn)
        self.last_ps = subject
        return subject

    cdef object _subject_str(self, const char *s, Py_ssize_t sn):
        raise NotImplementedError

    cdef int _publish_default(self, object subject, const char *r, Py_ssize_t rn,
                              const char *d, Py_ssize_t dn, const char *x=NULL,
                              Py_ssize_t xn=0) except -1:
        """Route data ``d[:dn]`` published on ``subject`` (reply ``r[:rn]``)
        as an event with the defaults (a new id, the flow's source, type =
        the subject), made in this parser's record buffer: a NATS PUB, a
        plain MQTT PUBLISH.  ``x[:xn]``: the record's extension block (a
        msgpack map; the door's own, e.g. an MQTT QoS 1 PUBLISH's
        ``{"mqttqos": 1}``), none when ``xn`` is 0.  The router's errors go
        to the caller."""
        global _id_counter
        cdef Router rt = self.router
        cdef Py_ssize_t srcn = PyBytes_GET_SIZE(rt.source_b)
        cdef Py_ssize_t rlen = EV_HEADER + EV_GENID + srcn + xn + dn
        cdef uint32_t xlen = <uint32_t>xn
        cdef char *b
        _grow(<void **>&self.rec, &self.rcap, rlen, 1, 4096)
        b = self.rec
        _id_counter += 1
        b += _ev_default_head(b, _id_counter, PyBytes_AS_STRING(rt.source_b), srcn, 0)
        self.rec[1] = <char>(<uint8_t>self.rec[1] | self.rec_flags)
        if xn:
            memcpy(self.rec + 12, &xlen, 4)     # (the rest length; type and trace: none)
            memcpy(b, x, xn)
            b += xn
        if dn:
            memcpy(b, d, dn)
        rt._publish_wire(subject, r, rn, self.rec, rlen, self.out, True)
        return 0

    cdef int _allowed(self, object subject) except -1:
        """0 if the publish permissions refuse ``subject`` (it must be valid)."""
        if (self.pub_allow is None or self.pub_allow.match(subject)) \
                and (self.pub_deny is None or not self.pub_deny.match(subject)):
            return 1
        if self.resp_check is not None and self.resp_check(subject):
            return 1
        return 0
