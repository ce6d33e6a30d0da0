package ansibletower

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// APIError is an answer of the AWX API that is not a success. It names the
// request and carries the API's own explanation ("detail"), never a secret.
type APIError struct {
	Method     string
	URL        string // without credentials; query kept
	StatusCode int
	Detail     string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// credentials is how the client authenticates. Secrets live only here.
type credentials struct {
	token    string
	username string
	password string
}

// client speaks the AWX REST API: one base URL, the API path detected once,
// authentication, deadlines, retries of transient failures and paging.
type client struct {
	base      *url.URL // scheme://host[:port] (+ any path prefix of base_url)
	api       string   // API root path with trailing slash: "/api/v2/" or "/api/controller/v2/"
	loginPath string   // session login for username/password: "/api/login/" (AWX) or the gateway's
	http      *http.Client
	creds     credentials // creds.token is guarded by mu (relogin drops it); the rest never changes
	log       *slog.Logger

	requestTimeout time.Duration // each HTTP exchange
	resilientWait  time.Duration // how long transient failures (5xx, connection errors) are retried

	mu       sync.Mutex
	session  bool // a login session (cookie) is in use
	basic    bool // the server has no session login: send Basic auth
	authGen  int  // bumped by each re-authentication
	requests atomic.Int64
}

func newClient(base *url.URL, creds credentials, log *slog.Logger, requestTimeout, resilientWait time.Duration, insecureTLS bool) *client {
	jar, _ := cookiejar.New(nil) // never fails without options
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if insecureTLS {
		tr.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // explicit setting verify_ssl: false
	}
	return &client{
		base:  base,
		creds: creds,
		log:   log,
		http: &http.Client{
			Transport: tr,
			Jar:       jar,
			// The login answers with a redirect; its cookies are what counts.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		requestTimeout: requestTimeout,
		resilientWait:  resilientWait,
	}
}

// resolve turns an API path into a URL: paths starting with "/" are taken as
// they are (the API's own "url" and "next" fields), others are relative to
// the API root.
func (c *client) resolve(path string) string {
	u := *c.base
	if !strings.HasPrefix(path, "/") {
		path = c.api + path
	}
	rel, err := url.Parse(path)
	if err != nil {
		u.Path = strings.TrimSuffix(u.Path, "/") + path
		return u.String()
	}
	u.Path = strings.TrimSuffix(c.base.Path, "/") + rel.Path
	u.RawQuery = rel.RawQuery
	return u.String()
}

// get fetches path into out.
func (c *client) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// post sends body as JSON to path and decodes the answer into out.
func (c *client) post(ctx context.Context, path string, body, out any) error {
	return c.do(ctx, http.MethodPost, path, body, out)
}

// do runs one API call. GETs are retried on connection errors and 5xx
// answers for up to resilientWait (the server restarting, a proxy's 502);
// other methods only when the connection was refused (nothing was sent). A
// 401 re-authenticates once when a password is known, then retries.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, c.resolve(path), err)
		}
	}
	var (
		firstFailure time.Time
		backoff      = 100 * time.Millisecond
		reauthed     bool
	)
	for {
		c.mu.Lock()
		gen := c.authGen
		c.mu.Unlock()
		err := c.once(ctx, method, path, payload, out)
		if err == nil {
			return nil
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized && !reauthed && c.canLogin() {
			reauthed = true
			c.log.Warn("ansibletower: authentication expired; logging in again", "url", c.resolve(path))
			if lerr := c.relogin(ctx, gen); lerr != nil {
				return fmt.Errorf("%w (logging in again: %v)", err, lerr)
			}
			continue
		}
		if !c.transient(method, err) || ctx.Err() != nil {
			return err
		}
		if firstFailure.IsZero() {
			firstFailure = time.Now()
			c.log.Warn("ansibletower: API unavailable; retrying", "url", c.resolve(path), "err", err, "max_resilient_wait", c.resilientWait)
		}
		if time.Since(firstFailure) >= c.resilientWait {
			return fmt.Errorf("%w (still failing after %s of retries, max_resilient_wait)", err, c.resilientWait.Round(time.Millisecond))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while retrying: %w)", err, ctx.Err())
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// transient says whether err may go away by itself.
func (c *client) transient(method string, err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		switch apiErr.StatusCode {
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return method == http.MethodGet
		}
		return false
	}
	var dec *decodeError
	if errors.As(err, &dec) {
		return false
	}
	if method != http.MethodGet {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

// decodeError is an answer that is not the JSON expected.
type decodeError struct {
	method, url string
	err         error
	snippet     string
}

func (e *decodeError) Error() string {
	msg := fmt.Sprintf("%s %s: decode response: %v", e.method, e.url, e.err)
	if e.snippet != "" {
		msg += fmt.Sprintf(" (body starts %q)", e.snippet)
	}
	return msg
}
func (e *decodeError) Unwrap() error { return e.err }

// once makes one HTTP exchange under its own deadline.
func (c *client) once(ctx context.Context, method, path string, payload []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	target := c.resolve(path)
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, target, err)
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.authorize(req)
	c.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, target, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, target, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Method: method, URL: target, StatusCode: resp.StatusCode, Detail: apiDetail(data)}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		snippet := ""
		if !strings.Contains(path, "login") {
			snippet = string(data[:min(len(data), 120)])
		}
		return &decodeError{method: method, url: target, err: err, snippet: snippet}
	}
	return nil
}

// unwrapURLError drops net/url's wrapper, which repeats method and URL.
func unwrapURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// apiDetail extracts the API's explanation from an error body: AWX answers
// {"detail": "..."} or {"field": ["..."]}; anything else is summarised.
func apiDetail(data []byte) string {
	var m map[string]any
	if json.Unmarshal(data, &m) == nil {
		if d, ok := m["detail"].(string); ok {
			return d
		}
		if len(m) > 0 {
			b, _ := json.Marshal(m)
			return string(b[:min(len(b), 300)])
		}
	}
	s := strings.TrimSpace(string(data))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s[:min(len(s), 120)]
}

// authorize adds credentials to req: the token, else (after a login) the
// session cookie and its CSRF header, else Basic auth. The token is read
// under c.mu: relogin drops a rejected one while other requests are made.
func (c *client) authorize(req *http.Request) {
	c.mu.Lock()
	token, session, basic := c.creds.token, c.session, c.basic
	c.mu.Unlock()
	switch {
	case token != "":
		req.Header.Set("Authorization", "Bearer "+token)
	case session:
		if req.Method != http.MethodGet {
			if tok := c.cookie("csrftoken"); tok != "" {
				req.Header.Set("X-CSRFToken", tok)
				req.Header.Set("Referer", c.base.String())
			}
		}
	case basic:
		req.SetBasicAuth(c.creds.username, c.creds.password)
	}
}

func (c *client) cookie(name string) string {
	for _, ck := range c.http.Jar.Cookies(c.base) {
		if ck.Name == name {
			return ck.Value
		}
	}
	return ""
}

// sessionCookies are the names AWX and AAP give their session cookie:
// AWX 20.0.1 and later, the AAP 2.5 gateway, and older AWX.
var sessionCookies = []string{"awx_sessionid", "gateway_sessionid", "sessionid"}

// hasSession reports whether a login left a session cookie: the one named,
// else one of sessionCookies.
func (c *client) hasSession(named string) bool {
	if named != "" {
		return c.cookie(named) != ""
	}
	for _, name := range sessionCookies {
		if c.cookie(name) != "" {
			return true
		}
	}
	return false
}

func (c *client) canLogin() bool { return c.creds.username != "" && c.creds.password != "" }

// relogin logs in again unless another caller already did since gen.
func (c *client) relogin(ctx context.Context, gen int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authGen != gen {
		return nil
	}
	c.creds.token = "" // a rejected token is not offered again
	if err := c.loginLocked(ctx); err != nil {
		return err
	}
	c.authGen++
	return nil
}

// login opens a session with username and password (as awxkit's
// load_session does): fetch the CSRF cookie, post the form, keep the
// session cookie. Servers without a login page get Basic auth instead.
func (c *client) login(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loginLocked(ctx)
}

func (c *client) loginLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	target := c.resolve(c.loginPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("login %s: %w", target, err)
	}
	c.requests.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("login: GET %s: %w", target, unwrapURLError(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		c.log.Debug("ansibletower: no login page; using basic authentication", "url", target)
		c.session, c.basic = false, true
		return nil
	}
	csrf := c.cookie("csrftoken")
	form := url.Values{"username": {c.creds.username}, "password": {c.creds.password}, "next": {c.api}}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("login %s: %w", target, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-CSRFToken", csrf)
	req.Header.Set("Referer", target)
	c.requests.Add(1)
	// The login's redirect names the session cookie: read it there rather
	// than follow it (the jar keeps the cookies of every answer).
	hc := *c.http
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = hc.Do(req)
	if err != nil {
		return fmt.Errorf("login: POST %s: %w", target, unwrapURLError(err))
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode >= 400 || !c.hasSession(resp.Header.Get("X-API-Session-Cookie-Name")) {
		detail := apiDetail(data)
		switch {
		case resp.StatusCode == http.StatusUnauthorized && !json.Valid(data):
			// AWX's login page again, as HTML.
			detail = "wrong username or password"
		case resp.StatusCode < 400:
			detail = "no session cookie in the answer (wrong username or password?)"
		}
		return &APIError{Method: http.MethodPost, URL: target, StatusCode: max(resp.StatusCode, http.StatusUnauthorized), Detail: detail}
	}
	c.session, c.basic = true, false
	return nil
}
