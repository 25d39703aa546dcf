// tlogclient: an independent C2SP tlog-tiles client over golang.org/x/mod/sumdb/tlog and
// sumdb/note, for tests/test_transparency.py.
//
//	tlogclient BASE_URL LOG_VKEY WITNESS_VKEYS(comma-separated or "-") QUORUM [OLD_CHECKPOINT_FILE]
//
// It fetches BASE_URL/checkpoint and opens it with the log's key and the witnesses' keys
// (cosignature/v1 verified by the verifier below, plugged into note.Open), requires QUORUM
// witness cosignatures, then, from tiles and entry bundles alone, proves and checks the
// inclusion of records (first, middle, last) and, given an older signed checkpoint, the
// consistency of the two trees. It prints one JSON object; any failure exits 1.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// cosigV1 verifies C2SP tlog-cosignature cosignature/v1 (Ed25519, signature type 0x04).
type cosigV1 struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func newCosigV1(vkey string) (*cosigV1, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed witness key %q", vkey)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 0x04 {
		return nil, fmt.Errorf("witness key %q is not an Ed25519 cosignature/v1 key", vkey)
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	id := binary.BigEndian.Uint32(h[:4])
	if fmt.Sprintf("%08x", id) != parts[1] {
		return nil, fmt.Errorf("witness key %q: bad key ID", vkey)
	}
	return &cosigV1{name: parts[0], hash: id, key: ed25519.PublicKey(raw[1:])}, nil
}

func (v *cosigV1) Name() string    { return v.name }
func (v *cosigV1) KeyHash() uint32 { return v.hash }
func (v *cosigV1) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig)
	m := []byte(fmt.Sprintf("cosignature/v1\ntime %d\n%s", t, msg))
	return ed25519.Verify(v.key, m, sig[8:])
}

type httpTiles struct{ base string }

func (r *httpTiles) Height() int { return 8 }

func fetch(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return body, nil
}

// C2SP tlog-tiles drops the height from Go's tile paths: tile/8/0/x001/234.p/5 -> tile/0/...
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), "tile/8/")
	if t.L == -1 {
		p = strings.Replace(p, "data/", "entries/", 1)
	}
	return "tile/" + p
}

var fetched = 0

func (r *httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := fetch(r.base + "/" + c2spPath(t))
		if err != nil {
			return nil, err
		}
		fetched++
		out[i] = data
	}
	return out, nil
}

func (r *httpTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

type checkpoint struct {
	size int64
	hash tlog.Hash
}

func openCheckpoint(text []byte, verifiers note.Verifiers) (checkpoint, *note.Note, error) {
	n, err := note.Open(text, verifiers)
	if err != nil {
		return checkpoint{}, nil, err
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return checkpoint{}, nil, fmt.Errorf("short checkpoint")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return checkpoint{}, nil, err
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return checkpoint{}, nil, fmt.Errorf("bad root")
	}
	var h tlog.Hash
	copy(h[:], root)
	return checkpoint{size, h}, n, nil
}

func entry(base string, index int64, size int64) ([]byte, error) {
	t := tlog.TileForIndex(8, tlog.StoredHashIndex(0, index))
	t.L = -1
	full := (index/256 + 1) * 256
	t.W = 256
	if full > size {
		t.W = int(size - index/256*256)
	}
	data, err := fetch(base + "/" + c2spPath(t))
	if err != nil {
		return nil, err
	}
	want := index % 256
	for i := int64(0); len(data) >= 2; i++ {
		l := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+l {
			return nil, fmt.Errorf("truncated bundle")
		}
		if i == want {
			return data[2 : 2+l], nil
		}
		data = data[2+l:]
	}
	return nil, fmt.Errorf("entry %d not in its bundle", index)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 5 {
		fail("usage: tlogclient BASE_URL LOG_VKEY WITNESS_VKEYS QUORUM [OLD_CHECKPOINT_FILE]")
	}
	base := strings.TrimRight(os.Args[1], "/")
	logKey, err := note.NewVerifier(os.Args[2])
	if err != nil {
		fail("log key: %v", err)
	}
	verifiers := []note.Verifier{logKey}
	witnesses := map[string]bool{}
	if os.Args[3] != "-" {
		for _, k := range strings.Split(os.Args[3], ",") {
			v, err := newCosigV1(k)
			if err != nil {
				fail("%v", err)
			}
			verifiers = append(verifiers, v)
			witnesses[v.Name()] = true
		}
	}
	quorum, _ := strconv.Atoi(os.Args[4])
	list := note.VerifierList(verifiers...)

	text, err := fetch(base + "/checkpoint")
	if err != nil {
		fail("%v", err)
	}
	cp, n, err := openCheckpoint(text, list)
	if err != nil {
		fail("checkpoint: %v", err)
	}
	cosigned := []string{}
	logSigned := false
	for _, s := range n.Sigs {
		if witnesses[s.Name] {
			cosigned = append(cosigned, s.Name)
		} else if s.Name == logKey.Name() && s.Hash == logKey.KeyHash() {
			logSigned = true
		}
	}
	if !logSigned {
		fail("checkpoint not signed by the log key")
	}
	if len(cosigned) < quorum {
		fail("checkpoint has %d witness cosignatures, fewer than the quorum %d", len(cosigned), quorum)
	}

	reader := tlog.TileHashReader(tlog.Tree{N: cp.size, Hash: cp.hash}, &httpTiles{base})
	checked := []int64{}
	for _, i := range []int64{0, cp.size / 2, cp.size - 1} {
		data, err := entry(base, i, cp.size)
		if err != nil {
			fail("entry %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint64(data[:8]); got != uint64(i+1) {
			fail("entry %d holds position %d", i, got)
		}
		p, err := tlog.ProveRecord(cp.size, i, reader)
		if err != nil {
			fail("prove record %d: %v", i, err)
		}
		if err := tlog.CheckRecord(p, cp.size, cp.hash, i, tlog.RecordHash(data)); err != nil {
			fail("check record %d: %v", i, err)
		}
		checked = append(checked, i)
	}
	result := map[string]any{
		"size": cp.size, "root": base64.StdEncoding.EncodeToString(cp.hash[:]),
		"cosigned_by": cosigned, "records_checked": checked,
	}
	if len(os.Args) > 5 {
		old, err := os.ReadFile(os.Args[5])
		if err != nil {
			fail("%v", err)
		}
		oldCp, _, err := openCheckpoint(old, list)
		if err != nil {
			fail("old checkpoint: %v", err)
		}
		p, err := tlog.ProveTree(cp.size, oldCp.size, reader)
		if err != nil {
			fail("prove tree: %v", err)
		}
		if err := tlog.CheckTree(p, cp.size, cp.hash, oldCp.size, oldCp.hash); err != nil {
			fail("check tree %d -> %d: %v", oldCp.size, cp.size, err)
		}
		result["consistent_from"] = oldCp.size
	}
	result["tiles_fetched"] = fetched
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(result)
	os.Stdout.Write(buf.Bytes())
}
