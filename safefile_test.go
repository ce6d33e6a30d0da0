package broker_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/hostbroker/broker"
	"github.com/hostbroker/broker/internal/safefile"
)

// broker.log is not written through a symbolic link planted in the broker
// directory, at logs/ or at broker.log itself: New fails naming it, and the
// link's target is unchanged.
func TestLogRefusesSymlinks(t *testing.T) {
	for _, at := range []string{"logs", filepath.Join("logs", "broker.log")} {
		t.Run(filepath.Base(at), func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(t.TempDir(), "target")
			require.NoError(t, os.WriteFile(target, []byte("keep me"), 0o644))
			link := target
			if at == "logs" {
				link = filepath.Dir(target)
			}
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "logs"), 0o700))
			require.NoError(t, os.Remove(filepath.Join(dir, "logs")))
			if at != "logs" {
				require.NoError(t, os.Mkdir(filepath.Join(dir, "logs"), 0o700))
			}
			require.NoError(t, os.Symlink(link, filepath.Join(dir, at)))

			b, err := broker.New(broker.WithDirectory(dir), broker.WithSettingsEnv([]string{}), broker.WithReaper(false))
			if err == nil {
				b.Close()
			}
			require.ErrorIs(t, err, safefile.ErrUnsafe)
			require.ErrorContains(t, err, filepath.Join(dir, at)+": is a symbolic link")
			got, _ := os.ReadFile(target)
			require.Equal(t, "keep me", string(got))
			entries, _ := os.ReadDir(filepath.Dir(target))
			require.Len(t, entries, 1, "nothing made beside the target")
		})
	}
}
