// Command verify opens an eStargz blob with the reference reader (containerd's estargz package),
// verifies the TOC against the expected digest, reads every regular file through the reader,
// checks every chunk with the TOC's chunk verifiers, and prints the tree it saw as JSON.
//
// Usage: verify BLOB TOC_DIGEST
//
// Built offline in GOPATH mode against Debian's golang-github-containerd-stargz-snapshotter-dev.
package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

type file struct {
	Type     string            `json:"type"`
	Size     int64             `json:"size"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Uname    string            `json:"uname"`
	Gname    string            `json:"gname"`
	ModTime  string            `json:"modtime"`
	LinkName string            `json:"linkName,omitempty"`
	DevMajor int               `json:"devMajor,omitempty"`
	DevMinor int               `json:"devMinor,omitempty"`
	Xattrs   map[string]string `json:"xattrs,omitempty"`
	SHA256   string            `json:"sha256,omitempty"`
	Chunks   int               `json:"chunks,omitempty"`
}

type report struct {
	TOCDigest      string           `json:"tocDigest"`
	TOCOffset      int64            `json:"tocOffset"`
	Files          map[string]*file `json:"files"`
	ChunksVerified int              `json:"chunksVerified"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: verify BLOB TOC_DIGEST")
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fail("open: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fail("stat: %v", err)
	}
	sr := io.NewSectionReader(f, 0, st.Size())
	tocOffset, _, err := estargz.OpenFooter(sr)
	if err != nil {
		fail("footer: %v", err)
	}
	r, err := estargz.Open(sr)
	if err != nil {
		fail("estargz.Open: %v", err)
	}
	verifier, err := r.VerifyTOC(digest.Digest(os.Args[2]))
	if err != nil {
		fail("VerifyTOC: %v", err)
	}
	rep := &report{TOCDigest: r.TOCDigest().String(), TOCOffset: tocOffset, Files: map[string]*file{}}
	root, ok := r.Lookup("")
	if !ok {
		fail("no root directory")
	}
	walk(r, verifier, "", root, rep)
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", " ")
	if err := out.Encode(rep); err != nil {
		fail("encode: %v", err)
	}
}

func walk(r *estargz.Reader, v estargz.TOCEntryVerifier, name string, dir *estargz.TOCEntry, rep *report) {
	dir.ForeachChild(func(base string, ent *estargz.TOCEntry) bool {
		p := path.Join(name, base)
		fi := &file{
			Type: ent.Type, Mode: ent.Mode, UID: ent.UID, GID: ent.GID, Uname: ent.Uname, Gname: ent.Gname,
			ModTime: ent.ModTime3339, LinkName: ent.LinkName, DevMajor: ent.DevMajor, DevMinor: ent.DevMinor,
		}
		if len(ent.Xattrs) > 0 {
			fi.Xattrs = map[string]string{}
			for k, val := range ent.Xattrs {
				fi.Xattrs[k] = base64.StdEncoding.EncodeToString(val)
			}
		}
		if ent.Type == "reg" {
			fi.Size = ent.Size
			// A hardlink's child entry is its target's entry; read it by the target's own name, as
			// ChunkEntryForOffset only knows chunks under that name.
			fi.SHA256, fi.Chunks = readFile(r, v, ent.Name, ent)
			rep.ChunksVerified += fi.Chunks
		}
		rep.Files[p] = fi
		if ent.Type == "dir" {
			walk(r, v, p, ent, rep)
		}
		return true
	})
}

// readFile reads the whole file through the reader, checks it against the TOC digest, then reads
// it again chunk by chunk and feeds each chunk to its verifier.
func readFile(r *estargz.Reader, v estargz.TOCEntryVerifier, p string, ent *estargz.TOCEntry) (string, int) {
	fr, err := r.OpenFile(p)
	if err != nil {
		fail("OpenFile %s: %v", p, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(fr, 0, ent.Size)); err != nil {
		fail("read %s: %v", p, err)
	}
	sum := fmt.Sprintf("sha256:%x", h.Sum(nil))
	if ent.Digest != "" && sum != ent.Digest {
		fail("%s: content %s does not match TOC digest %s", p, sum, ent.Digest)
	}
	chunks := 0
	for off := int64(0); off < ent.Size; {
		ce, ok := r.ChunkEntryForOffset(p, off)
		if !ok {
			fail("%s: no chunk for offset %d", p, off)
		}
		dv, err := v.Verifier(ce)
		if err != nil {
			fail("%s: verifier for chunk at %d: %v", p, off, err)
		}
		if _, err := io.Copy(dv, io.NewSectionReader(fr, ce.ChunkOffset, ce.ChunkSize)); err != nil {
			fail("%s: read chunk at %d: %v", p, off, err)
		}
		if !dv.Verified() {
			fail("%s: chunk at %d (size %d) does not match its chunkDigest", p, ce.ChunkOffset, ce.ChunkSize)
		}
		chunks++
		off = ce.ChunkOffset + ce.ChunkSize
	}
	return sum, chunks
}
