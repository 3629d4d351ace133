package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"
)

// Embedded reports whether no Redis is configured, so the in-process Redis is used.
func (r Redis) Embedded() bool {
	return r.URL == "" && r.Sentinel.MasterName == "" && len(r.Cluster.Addrs) == 0
}

// UniversalOptions turns the Redis section into go-redis options: a URL (redis:// or
// rediss://), a Sentinel master or a Cluster. One redis.UniversalClient built from them serves
// asynq (NewClientFromRedisClient and friends) and our own keys alike.
//
// ContextTimeoutEnabled makes a command's socket deadlines the earlier of the read/write
// timeout and the context's deadline (go-redis ignores the context's deadline otherwise),
// so a caller's deadline bounds a command against a hung Redis without a goroutine per
// call: the receiver's server.enqueue_timeout relies on it.
func (r Redis) UniversalOptions() (*redis.UniversalOptions, error) {
	o := &redis.UniversalOptions{
		Username:              r.Username,
		Password:              r.Password.Value(),
		DialTimeout:           r.DialTimeout,
		ReadTimeout:           r.ReadTimeout,
		WriteTimeout:          r.WriteTimeout,
		ContextTimeoutEnabled: true,
	}
	switch {
	case r.URL != "":
		u, err := redis.ParseURL(r.URL)
		if err != nil {
			return nil, fmt.Errorf("config: redis.url: %w", err)
		}
		o.Addrs = []string{u.Addr}
		o.DB = u.DB
		o.TLSConfig = u.TLSConfig
		if u.Username != "" {
			o.Username = u.Username
		}
	case r.Sentinel.MasterName != "":
		o.MasterName = r.Sentinel.MasterName
		o.Addrs = r.Sentinel.Addrs
		o.DB = r.Sentinel.DB
		o.SentinelPassword = r.Sentinel.Password.Value()
	case len(r.Cluster.Addrs) > 0:
		o.Addrs = r.Cluster.Addrs
		o.IsClusterMode = true
	default:
		return nil, fmt.Errorf("config: no redis configured")
	}
	if r.TLS.Enabled || r.TLS.CAFile != "" {
		tc, err := r.tlsConfig(o.TLSConfig)
		if err != nil {
			return nil, err
		}
		o.TLSConfig = tc
	}
	return o, nil
}

func (r Redis) tlsConfig(base *tls.Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		tc = base.Clone()
	}
	tc.ServerName = r.TLS.ServerName
	tc.InsecureSkipVerify = r.TLS.InsecureSkipVerify //nolint:gosec // explicit opt-in for test clusters
	if r.TLS.CAFile != "" {
		pem, err := os.ReadFile(r.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("config: redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("config: redis.tls.ca_file: no certificate found in %s", r.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
