package tasks

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/miitel-crm-sync/miitel-crm-sync/mappers/miitel"
)

// CompressEvent is the stored form of an event outside the queue: JSON, DEFLATE-compressed.
// The worker keeps each call's merged state in it and the dead letter keeps the event it can
// replay; a seed-sized answered call with transcript and phrases compresses to a few KB.
func CompressEvent(ev *miitel.Event) ([]byte, error) {
	var buf bytes.Buffer
	zw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(zw)
	zw.Reset(&buf)
	if err := json.NewEncoder(zw).Encode(ev); err != nil {
		return nil, fmt.Errorf("tasks: compress event: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("tasks: compress event: %w", err)
	}
	return buf.Bytes(), nil
}

// DecompressEvent reads what CompressEvent wrote.
func DecompressEvent(b []byte) (*miitel.Event, error) {
	zr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(zr)
	if err := zr.(flate.Resetter).Reset(bytes.NewReader(b), nil); err != nil {
		return nil, fmt.Errorf("tasks: decompress event: %w", err)
	}
	var ev miitel.Event
	if err := json.NewDecoder(zr).Decode(&ev); err != nil {
		return nil, fmt.Errorf("tasks: decompress event: %w", err)
	}
	return &ev, nil
}

// The DEFLATE writer and reader are pooled: a fresh flate writer allocates about a megabyte
// of tables, which every task would otherwise throw away.
var (
	flateWriters = sync.Pool{New: func() any {
		zw, _ := flate.NewWriter(nil, flate.BestSpeed) // only fails for an invalid level
		return zw
	}}
	flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}
)
