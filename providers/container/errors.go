package container

import (
	"io/fs"
	"net/url"
	"regexp"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
)

// isNotFound reports whether err is the engine's "not found" (HTTP 404).
func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// notExistError is a path missing in a container: errors.Is(err,
// fs.ErrNotExist) holds, as for an SSH host, and the engine's own error is
// kept in the chain (not in the text, which repeats the container id).
type notExistError struct{ err error }

func (e *notExistError) Error() string        { return "file does not exist" }
func (e *notExistError) Is(target error) bool { return target == fs.ErrNotExist }
func (e *notExistError) Unwrap() error        { return e.err }

// textError replaces an error's text and keeps it in the chain.
type textError struct {
	text string
	err  error
}

func (e *textError) Error() string { return e.text }
func (e *textError) Unwrap() error { return e.err }

// requestURL matches a request as net/http quotes it in errors: for a
// unix socket engine Post "http://%2Fvar%2Frun%2Fdocker.sock/v1.41/…", for
// an ssh one the placeholder host sshDummyHost, for a tcp one (TLS too)
// http://host:port.
var requestURL = regexp.MustCompile(`([A-Za-z]+) "https?://([^/"\s]+)([^"\s]*)"`)

// readable names the engine readably in err's text ("POST
// /v1.41/containers/create on unix:///var/run/docker.sock"), where
// net/http quoted the request's URL with an escaped socket path, the
// placeholder host of an ssh engine or, for a TLS engine, http:// (uri,
// when known, names the last two); err stays
// in the chain.
func readable(err error, uri string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	tcpHost := "" // a tcp:// engine's host:port, as its request URLs hold it
	if u, uerr := url.Parse(uri); uerr == nil && (u.Scheme == "tcp" || u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		tcpHost = u.Host
	}
	if !strings.Contains(msg, "%2F") && !strings.Contains(msg, sshDummyHost) && (tcpHost == "" || !strings.Contains(msg, "://"+tcpHost+"/")) {
		return err
	}
	text := requestURL.ReplaceAllStringFunc(msg, func(m string) string {
		sub := requestURL.FindStringSubmatch(m)
		engine := ""
		switch {
		case strings.HasPrefix(sub[2], "%2F"):
			sock, uerr := url.PathUnescape(sub[2])
			if uerr != nil {
				return m
			}
			engine = "unix://" + sock
		case sub[2] == sshDummyHost && uri != "", sub[2] == tcpHost && tcpHost != "":
			engine = uri
		default:
			return m
		}
		path, _, _ := strings.Cut(sub[3], "?")
		if path == "" {
			path = "/"
		}
		return strings.ToUpper(sub[1]) + " " + path + " on " + engine
	})
	if uri != "" {
		// The moby client's "Cannot connect to the Docker daemon at
		// http://docker.example.invalid."
		text = strings.ReplaceAll(text, "http://"+sshDummyHost, uri)
	}
	if text == msg {
		return err
	}
	return &textError{text: text, err: err}
}

// tidy makes *err readable (see readable); for deferred use by the
// provider's entry points.
func (p *Provider) tidy(err *error) {
	if *err != nil {
		*err = readable(p.eng.failures.explain(*err), p.eng.uri)
	}
}
