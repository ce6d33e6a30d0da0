package container

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// tlsOptions say whether and how a tcp:// engine is reached over TLS, as
// the docker CLI reads DOCKER_TLS, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
// (the settings tls, tls_verify and tls_cert_path win over them).
type tlsOptions struct {
	enabled  bool   // TLS for tcp:// (https:// always is)
	verify   bool   // verify the engine's certificate
	certPath string // directory of ca.pem, cert.pem, key.pem
	from     string // where certPath came from, for errors
	explicit bool   // certPath was given (not the default ~/.docker)
}

// resolveTLS reads the TLS settings and environment. tls_verify (or
// DOCKER_TLS_VERIFY, any value) turns TLS on and verifies the engine; tls
// (DOCKER_TLS) alone turns it on without verification, as the docker
// CLI's --tls; a certificate directory alone turns it on, verified.
func resolveTLS(s settings) tlsOptions {
	on := os.Getenv("DOCKER_TLS") != ""
	if s.tls != nil {
		on = *s.tls
	}
	verifySet := os.Getenv("DOCKER_TLS_VERIFY") != ""
	verify := verifySet
	if s.tlsVerify != nil {
		verifySet, verify = true, *s.tlsVerify
	}
	o := tlsOptions{certPath: os.Getenv("DOCKER_CERT_PATH"), from: "DOCKER_CERT_PATH"}
	if s.tlsCertPath != "" {
		o.certPath, o.from = s.tlsCertPath, "setting tls_cert_path"
	}
	o.explicit = o.certPath != ""
	o.enabled = on || verify || o.explicit
	o.verify = verify || (!verifySet && !on)
	if !o.explicit {
		dir := os.Getenv("DOCKER_CONFIG")
		if dir == "" {
			if home, err := os.UserHomeDir(); err == nil {
				dir = filepath.Join(home, ".docker")
			}
		}
		o.certPath, o.from = dir, "the docker CLI's default"
	}
	return o
}

// config builds the client's TLS configuration for serverName, and names
// what verifies the engine's certificate (for errors).
func (o tlsOptions) config(serverName string) (*tls.Config, string, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if o.explicit {
		if _, err := os.Stat(o.certPath); err != nil {
			return nil, "", fmt.Errorf("TLS certificates (%s): %w", o.from, err)
		}
	}
	name := func(f string) string { return filepath.Join(o.certPath, f) }
	trust := "nothing (verification is off)"
	if o.verify {
		trust = "the system's CAs"
		b, err := os.ReadFile(name("ca.pem"))
		switch {
		case err == nil:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				return nil, "", fmt.Errorf("TLS CA %s (%s): no PEM certificate in it", name("ca.pem"), o.from)
			}
			cfg.RootCAs = pool
			trust = "the CA in " + name("ca.pem") + " (" + o.from + ")"
		case !errors.Is(err, fs.ErrNotExist):
			return nil, "", fmt.Errorf("TLS CA (%s): %w", o.from, err)
		}
	} else {
		cfg.InsecureSkipVerify = true
	}
	_, certErr := os.Stat(name("cert.pem"))
	_, keyErr := os.Stat(name("key.pem"))
	switch {
	case certErr == nil && keyErr == nil:
		pair, err := tls.LoadX509KeyPair(name("cert.pem"), name("key.pem"))
		if err != nil {
			return nil, "", fmt.Errorf("TLS client certificate %s and key %s (%s): %w", name("cert.pem"), name("key.pem"), o.from, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case certErr == nil || keyErr == nil:
		return nil, "", fmt.Errorf("TLS client certificate (%s): need both cert.pem and key.pem in %s: %w", o.from, o.certPath, errors.Join(certErr, keyErr))
	}
	return cfg, trust, nil
}

// tlsDial returns a dialer of TLS connections to addr whose handshake the
// context bounds; its errors say what the engine's certificate was
// checked against, and that the engine may want a client certificate.
func tlsDial(addr string, cfg *tls.Config, trust string) func(ctx context.Context, _, _ string) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}, Config: cfg}
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
				return nil, fmt.Errorf("TLS to engine %s: its certificate is not trusted by %s: %w", addr, trust, err)
			}
			return nil, fmt.Errorf("TLS to engine %s: %w", addr, err)
		}
		return &tlsConn{Conn: c.(*tls.Conn), hasCert: len(cfg.Certificates) > 0}, nil
	}
}

// tlsConn is a TLS connection to an engine. Under TLS 1.3 an engine that
// refuses the client's certificate says so at the first read, not in the
// handshake: such a read's error says what was sent.
type tlsConn struct {
	*tls.Conn
	hasCert bool
}

func (c *tlsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && isCertAlert(err) {
		if c.hasCert {
			err = fmt.Errorf("the engine refused this client's certificate (cert.pem): %w", err)
		} else {
			err = fmt.Errorf("the engine wants a client certificate (cert.pem and key.pem in DOCKER_CERT_PATH or tls_cert_path): %w", err)
		}
	}
	return n, err
}

// isCertAlert reports whether err is a TLS alert about the client's
// certificate.
func isCertAlert(err error) bool {
	msg := err.Error()
	for _, a := range []string{"certificate required", "bad certificate", "unknown certificate authority", "handshake failure"} {
		if strings.Contains(msg, "tls: "+a) {
			return true
		}
	}
	return false
}
