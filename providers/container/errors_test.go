package container

import (
	"errors"
	"io"
	"testing"
)

func TestReadable(t *testing.T) {
	for _, c := range []struct{ in, uri, want string }{
		{`create x: error during connect: Post "http://%2Fvar%2Frun%2Fdocker.sock/v1.41/containers/create?name=x": EOF`, "unix:///var/run/docker.sock",
			`create x: error during connect: POST /v1.41/containers/create on unix:///var/run/docker.sock: EOF`},
		{`error during connect: Get "http://docker.example.invalid/v1.44/images/a/json": EOF`, "ssh://me@box",
			`error during connect: GET /v1.44/images/a/json on ssh://me@box: EOF`},
		// A tcp engine's URL says http:// also under TLS (the dialer's).
		{`Get "http://localhost:2376/v1.44/_ping": EOF`, "tcp://localhost:2376", `GET /v1.44/_ping on tcp://localhost:2376: EOF`},
		{`Get "http://elsewhere:2376/v1.44/_ping": EOF`, "tcp://localhost:2376", `Get "http://elsewhere:2376/v1.44/_ping": EOF`},
		{`Cannot connect to the Docker daemon at http://docker.example.invalid. Is the docker daemon running?`, "ssh://me@box",
			`Cannot connect to the Docker daemon at ssh://me@box. Is the docker daemon running?`},
		{`plain`, "", `plain`},
	} {
		base := errors.New(c.in)
		got := readable(base, c.uri)
		if got.Error() != c.want {
			t.Errorf("readable(%q) = %q, want %q", c.in, got, c.want)
		}
		if !errors.Is(got, base) {
			t.Errorf("readable(%q) lost the error from its chain", c.in)
		}
	}
	if readable(nil, "") != nil {
		t.Error("readable(nil) != nil")
	}
	if err := readable(io.EOF, ""); err != io.EOF {
		t.Errorf("readable(io.EOF) = %v", err)
	}
}
