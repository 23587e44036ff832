package web

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
)

var jobIDPattern = regexp.MustCompile(`^[0-9a-fA-F-]{1,64}$`)

// download sends a job's whole stored output as a text file. It reads
// GetJobLogs from the API as a stream of messages and writes each chunk
// as it comes, so a log of any size passes through in bounded memory.
func (u *UI) download(w http.ResponseWriter, r *http.Request) {
	sess, ok := u.session(r)
	if !ok {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	id := r.PathValue("id")
	if !jobIDPattern.MatchString(id) {
		http.Error(w, fmt.Sprintf("job id %q: want a job id", id), http.StatusBadRequest)
		return
	}
	msg, _ := json.Marshal(map[string]any{"id": id})
	body := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	copy(body[5:], msg)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "/hodei.v1.JobService/GetJobLogs", bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.URL = &url.URL{Path: req.URL.Path}
	req.Header.Set("Content-Type", "application/connect+json")
	if sess.p.Token != "" {
		req.Header.Set("Authorization", "Bearer "+sess.p.Token)
	}
	pr, pw := io.Pipe()
	rw := &pipeResponse{header: http.Header{}, pw: pw}
	go func() {
		u.cfg.API.ServeHTTP(rw, req)
		pw.Close()
	}()
	defer pr.Close()
	if err := copyLog(w, bufio.NewReader(pr), id); err != nil {
		u.log.Warn("log download", "job_id", id, "err", err)
	}
}

// copyLog writes the chunks of a GetJobLogs stream (Connect JSON
// envelopes) to w. An error before the first byte becomes the answer's
// status; after it, the download is cut short.
func copyLog(w http.ResponseWriter, rd *bufio.Reader, id string) error {
	started := false
	flusher, _ := w.(http.Flusher)
	var head [5]byte
	for {
		if _, err := io.ReadFull(rd, head[:]); err != nil {
			return fmt.Errorf("read stream: %w", err)
		}
		n := binary.BigEndian.Uint32(head[1:])
		frame := make([]byte, n)
		if _, err := io.ReadFull(rd, frame); err != nil {
			return fmt.Errorf("read message: %w", err)
		}
		if head[0]&2 != 0 {
			var end struct {
				Error *struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(frame, &end); err == nil && end.Error != nil {
				if !started {
					status := http.StatusBadGateway
					if end.Error.Code == "not_found" {
						status = http.StatusNotFound
					}
					http.Error(w, end.Error.Message, status)
				}
				return fmt.Errorf("%s: %s", end.Error.Code, end.Error.Message)
			}
			return nil
		}
		var m struct {
			Chunks []struct {
				Data []byte `json:"data"`
			} `json:"chunks"`
		}
		if err := json.Unmarshal(frame, &m); err != nil {
			return fmt.Errorf("decode message: %w", err)
		}
		if !started {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=\"job-%s.log\"", id))
			started = true
		}
		for _, c := range m.Chunks {
			if _, err := w.Write(c.Data); err != nil {
				return err
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// pipeResponse is the ResponseWriter of an API call made in this
// process: what the API writes comes out of the pipe's other end.
type pipeResponse struct {
	header http.Header
	pw     *io.PipeWriter
	wrote  bool
}

func (p *pipeResponse) Header() http.Header { return p.header }

func (p *pipeResponse) WriteHeader(code int) {
	if p.wrote {
		return
	}
	p.wrote = true
	if code != http.StatusOK {
		p.pw.CloseWithError(fmt.Errorf("api answered %d", code))
	}
}

func (p *pipeResponse) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return p.pw.Write(b)
}

func (p *pipeResponse) Flush() {}
