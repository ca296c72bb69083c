package embedded

// #cgo LDFLAGS: -lz -lm
// #include <math.h>
// #include <stdlib.h>
// #include <string.h>
// #include <zlib.h>
//
// /* p[i] * log2(p[i]) for each probability, as numpy computes p * np.log2(p) (the C library's log2). */
// static void entropy_terms(const double *p, int n, double *out) {
//     for (int i = 0; i < n; i++) out[i] = p[i] * log2(p[i]);
// }
//
// /* A deflate stream as compress2(level 1) makes one, kept for reuse (deflateReset gives the same bytes). */
// static z_stream *level1_stream(void) {
//     z_stream *s = calloc(1, sizeof(z_stream));
//     if (s == NULL) return NULL;
//     if (deflateInit(s, 1) != Z_OK) { free(s); return NULL; }
//     return s;
// }
//
// static void free_stream(z_stream *s) { deflateEnd(s); free(s); }
//
// /* The size of data compressed at level 1 (as zlib.compress(data, 1)), or -1. */
// static long level1_size(z_stream *s, const unsigned char *data, unsigned long n, unsigned char *out, unsigned long cap) {
//     if (deflateReset(s) != Z_OK) return -1;
//     s->next_in = (unsigned char *)data; s->avail_in = n;
//     s->next_out = out; s->avail_out = cap;
//     if (deflate(s, Z_FINISH) != Z_STREAM_END) return -1;
//     return (long)s->total_out;
// }
import "C"

import (
	"math"
	"runtime"
	"sync"
	"unsafe"
)

// SampleLimit is how many bytes of a payload sample the traits read (dwcp_inference/features.py SAMPLE_LIMIT).
const SampleLimit = 64 * 1024

// ByteEntropy is Shannon's entropy of the sample's byte distribution in bits per byte (0..8), computed as
// features.py byte_entropy computes it with numpy: the C library's log2 (Go's math.Log2 differs in the last bit)
// and numpy's pairwise summation, so the two are equal bit for bit (TestPayloadTraitsEqualFeaturesPy).
func ByteEntropy(sample []byte) float64 {
	if len(sample) > SampleLimit {
		sample = sample[:SampleLimit]
	}
	if len(sample) == 0 {
		return 0
	}
	var counts [256]int
	for _, b := range sample {
		counts[b]++
	}
	sc := entropyScratch.Get().(*[2][256]float64) // Go memory handed to C escapes: reuse it
	defer entropyScratch.Put(sc)
	p, terms := &sc[0], &sc[1]
	n := 0
	size := float64(len(sample))
	for _, c := range counts {
		if c > 0 {
			p[n] = float64(c) / size
			n++
		}
	}
	C.entropy_terms((*C.double)(unsafe.Pointer(&p[0])), C.int(n), (*C.double)(unsafe.Pointer(&terms[0])))
	return -pairwiseSum(terms[:n])
}

var entropyScratch = sync.Pool{New: func() any { return new([2][256]float64) }}

// deflater is a reusable level-1 deflate stream and its output buffer.
type deflater struct {
	stream *C.z_stream
	out    []byte
}

var deflaters = make(chan *deflater, 4*runtime.GOMAXPROCS(0))

// SampleRatio is the sample's compressed/original size under zlib at level 1 (features.py sample_ratio). Only
// libz gives zlib's bytes, hence cgo: Go's compress/flate compresses differently.
func SampleRatio(sample []byte) float64 {
	if len(sample) > SampleLimit {
		sample = sample[:SampleLimit]
	}
	if len(sample) == 0 {
		return 1
	}
	var d *deflater
	select {
	case d = <-deflaters:
	default:
		if d = (&deflater{stream: C.level1_stream()}); d.stream == nil {
			return math.NaN() // no memory for zlib: the range check then refuses the value
		}
	}
	bound := int(C.deflateBound(d.stream, C.uLong(len(sample))))
	if cap(d.out) < bound {
		d.out = make([]byte, bound)
	}
	size := C.level1_size(d.stream, (*C.uchar)(unsafe.Pointer(&sample[0])), C.ulong(len(sample)),
		(*C.uchar)(unsafe.Pointer(&d.out[0])), C.ulong(bound))
	select {
	case deflaters <- d:
	default:
		C.free_stream(d.stream)
	}
	if size < 0 {
		return math.NaN()
	}
	return float64(size) / float64(len(sample))
}

// pairwiseSum adds as numpy's float64 sum does (pairwise, eight accumulators per block of at most 128).
func pairwiseSum(a []float64) float64 {
	n := len(a)
	switch {
	case n < 8:
		s := 0.0
		for _, v := range a {
			s += v
		}
		return s
	case n <= 128:
		var r [8]float64
		copy(r[:], a[:8])
		i := 8
		for ; i < n-n%8; i += 8 {
			for k := 0; k < 8; k++ {
				r[k] += a[i+k]
			}
		}
		s := (r[0] + r[1]) + (r[2] + r[3]) + ((r[4] + r[5]) + (r[6] + r[7]))
		for ; i < n; i++ {
			s += a[i]
		}
		return s
	default:
		half := n / 2
		half -= half % 8
		return pairwiseSum(a[:half]) + pairwiseSum(a[half:])
	}
}
