package bench

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"time"
)

// EmitConfig configures Emit.
type EmitConfig struct {
	Lines int64 // lines to write
	Rate  int   // lines per second; 0: unpaced
	Size  int   // pad lines to this many bytes, newline included
}

// Emit writes numbered lines to w, paced at cfg.Rate per second (0: as
// fast as possible), each cfg.Size bytes long: the load generator of
// Logs, which runs it as a job (`hodei bench emit`).
func Emit(w io.Writer, cfg EmitConfig) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	start := time.Now()
	pad := bytes.Repeat([]byte("x"), max(cfg.Size, 0))
	var buf []byte
	for i := int64(1); i <= cfg.Lines; i++ {
		buf = strconv.AppendInt(append(buf[:0], "line "...), i, 10)
		if len(buf) < cfg.Size-1 {
			buf = append(buf, pad[:cfg.Size-1-len(buf)]...)
		}
		buf = append(buf, '\n')
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		if cfg.Rate > 0 && i%int64(max(cfg.Rate/100, 1)) == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
			if d := time.Duration(i) * time.Second / time.Duration(cfg.Rate); d > time.Since(start) {
				time.Sleep(d - time.Since(start))
			}
		}
	}
	return bw.Flush()
}
