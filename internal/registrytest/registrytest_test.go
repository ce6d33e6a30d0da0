package registrytest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The registry answers on its address, asks for the htpasswd users'
// credentials, logs each request, and its slow link holds to its rate.
func TestRegistry(t *testing.T) {
	r := Start(t, Options{Users: map[string]string{"ci": "pw"}})
	get := func(user, pass string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+r.Addr+"/v2/", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("", ""); code != http.StatusUnauthorized {
		t.Errorf("without credentials: %d, want 401", code)
	}
	if code := get("ci", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("with a wrong password: %d, want 401", code)
	}
	if code := get("ci", "pw"); code != http.StatusOK {
		t.Errorf("with the user's password: %d, want 200", code)
	}
	// The access log is written as each request ends; Start's own probe
	// comes first.
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Requests()) < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	reqs := r.Requests()
	if len(reqs) != 4 || reqs[1] != (Request{"GET", "/v2/", 401}) || reqs[3] != (Request{"GET", "/v2/", 200}) {
		t.Errorf("requests logged: %+v", reqs)
	}
	r.Stop()
	if _, err := http.Get("http://" + r.Addr + "/v2/"); err == nil {
		t.Error("the registry answers after Stop")
	}
}

func TestSlowBody(t *testing.T) {
	const rate = 64 << 10
	b := &slowBody{rc: io.NopCloser(io.LimitReader(zeros{}, rate/2)), rate: rate, start: time.Now()}
	start := time.Now()
	n, err := io.Copy(io.Discard, b)
	if err != nil || n != rate/2 {
		t.Fatalf("read %d, %v", n, err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("%d bytes at %d B/s took %s, want about 500ms", n, rate, d)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// PushForeign's tag is a manifest list of exactly the platforms asked for,
// each manifest and blob fetchable (here behind htpasswd users).
func TestPushForeign(t *testing.T) {
	r := Start(t, Options{Users: map[string]string{"ci": "pw"}})
	ref := r.PushForeign(t, "brokertest/foreign:1", "linux/arm64", "linux/s390x")
	if ref != r.Addr+"/brokertest/foreign:1" {
		t.Errorf("PushForeign = %q", ref)
	}
	get := func(path, accept string) []byte {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+r.Addr+"/v2/brokertest/foreign/"+path, nil)
		req.Header.Set("Accept", accept)
		resp, err := r.do(req, http.StatusOK)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	var list struct {
		MediaType string       `json:"mediaType"`
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(get("manifests/1", mediaList), &list); err != nil || list.MediaType != mediaList {
		t.Fatalf("the tag's manifest: %+v, %v", list, err)
	}
	var got []string
	for _, d := range list.Manifests {
		got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
		var m struct {
			Config descriptor   `json:"config"`
			Layers []descriptor `json:"layers"`
		}
		if err := json.Unmarshal(get("manifests/"+d.Digest, mediaManifest), &m); err != nil || len(m.Layers) != 1 {
			t.Fatalf("manifest %s: %+v, %v", d.Digest, m, err)
		}
		var cfg struct{ Architecture string }
		if err := json.Unmarshal(get("blobs/"+m.Config.Digest, "*/*"), &cfg); err != nil || cfg.Architecture != d.Platform.Architecture {
			t.Errorf("config of %s: %+v, %v", d.Platform.Architecture, cfg, err)
		}
		if b := get("blobs/"+m.Layers[0].Digest, "*/*"); digestOf(b) != m.Layers[0].Digest {
			t.Errorf("layer %s has digest %s", m.Layers[0].Digest, digestOf(b))
		}
	}
	if strings.Join(got, ",") != "linux/arm64,linux/s390x" {
		t.Errorf("platforms %v, want linux/arm64 and linux/s390x", got)
	}
}
