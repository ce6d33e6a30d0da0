package hostkit

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeSFTPServer answers the hello with extensions and then, when asked
// for limits, with reply (raw packet type and body).
func fakeSFTPServer(t *testing.T, extensions []string, replyType byte, reply []byte) (io.Reader, io.Writer, <-chan byte) {
	t.Helper()
	cr, sw := io.Pipe() // server → client
	sr, cw := io.Pipe() // client → server
	asked := make(chan byte, 2)
	go func() {
		defer sw.Close()
		for {
			typ, body, err := readSFTPPacket(sr)
			if err != nil {
				return
			}
			asked <- typ
			switch typ {
			case fxpInit:
				v := binary.BigEndian.AppendUint32(nil, 3)
				for _, e := range extensions {
					v = appendSSHString(v, e)
				}
				_ = writeSFTPPacket(sw, fxpVersion, v)
			case fxpExtended:
				name, _, ok := readSSHString(body[4:])
				if !ok || string(name) != sftpLimitsExt {
					return
				}
				_ = writeSFTPPacket(sw, replyType, reply)
			}
		}
	}()
	t.Cleanup(func() { cw.Close(); sr.Close() })
	return cr, cw, asked
}

func limitsReply(id uint32, packet, read, write uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, id)
	for _, v := range []uint64{packet, read, write, 0} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func TestAskRequestSize(t *testing.T) {
	openssh := []string{"posix-rename@openssh.com", "1", sftpLimitsExt, "1"}
	for _, tc := range []struct {
		name       string
		extensions []string
		replyType  byte
		reply      []byte
		want       int
		asks       bool // sends the limits request
		wantErr    string
	}{
		{name: "OpenSSH 8.6+", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(1, 256<<10, 255<<10, 255<<10), want: 255 << 10, asks: true},
		{name: "smaller writes", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(1, 1<<20, 1<<20, 64<<10), want: 64 << 10, asks: true},
		{name: "packet bound", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(1, 100<<10, 1<<20, 1<<20), want: 100<<10 - 1024, asks: true},
		{name: "capped", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(1, 0, 4<<20, 4<<20), want: maxSFTPRequest, asks: true},
		{name: "zero says nothing", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(1, 0, 0, 0), want: 0, asks: true},
		{name: "below every server's", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(1, 0, 16<<10, 16<<10), want: 0, asks: true},
		{name: "not listed", extensions: []string{"posix-rename@openssh.com", "1"}, want: 0},
		{name: "other version", extensions: []string{sftpLimitsExt, "2"}, want: 0},
		{name: "refused", extensions: openssh, replyType: fxpStatus, reply: make([]byte, 8), want: 0, asks: true},
		{name: "short reply", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(1, 0, 0, 0)[:20], asks: true, wantErr: "malformed reply"},
		{name: "wrong id", extensions: openssh, replyType: fxpExtendedReply, reply: limitsReply(7, 0, 1<<20, 1<<20), asks: true, wantErr: "malformed reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, asked := fakeSFTPServer(t, tc.extensions, tc.replyType, tc.reply)
			got, err := askRequestSize(r, w)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
				require.Equal(t, tc.want, got)
			}
			require.Equal(t, byte(fxpInit), <-asked)
			if tc.asks {
				require.Equal(t, byte(fxpExtended), <-asked)
			} else {
				require.Empty(t, asked)
			}
		})
	}
}

// TestAskRequestSizeBadHello: a server that answers the hello with
// something else, or with a huge packet, is an error, not a hang.
func TestAskRequestSizeBadHello(t *testing.T) {
	for name, hello := range map[string][]byte{
		"not VERSION": {0, 0, 0, 5, fxpStatus, 0, 0, 0, 0},
		"huge":        {0x7f, 0, 0, 0, fxpVersion},
		"cut short":   {0, 0, 0, 9, fxpVersion, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := askRequestSize(bytes.NewReader(hello), io.Discard)
			require.Error(t, err)
		})
	}
}
