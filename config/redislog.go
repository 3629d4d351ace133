package config

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// RedisLogger adapts go-redis's process-wide logger (redis.SetLogger) to slog, so its lines
// (sentinel failovers, pool dial failures) reach the service's JSON or text log with a level
// and a component instead of plain text on stderr. go-redis logs through one global; main
// sets it once, right after building the logger.
type RedisLogger struct{ Log *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.Log.Log(ctx, redisLogLevel(msg), "redis client: "+strings.TrimPrefix(msg, "redis: "), "component", "redis")
}

// redisLogLevel ranks go-redis's messages: news of a topology change is info, a failure
// the client works around is a warning, a recovered panic an error, internal chatter debug.
func redisLogLevel(msg string) slog.Level {
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(msg, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("panic"):
		return slog.LevelError
	case has("sentinel: new master", "discovered new sentinel", "sentinel: selected addr", "migrated to", "reloading cluster state"):
		return slog.LevelInfo
	case has("getting command info", "info for cmd=", "maintnotifications", "autopipeline", "failed to close",
		"rejected by hook", "unread data", "push:", "putConn"):
		return slog.LevelDebug
	default: // failed to dial, GetMasterAddrByName failed, all nodes failing, ...
		return slog.LevelWarn
	}
}
