package container

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hostbroker/broker/inventory"
)

// MappedPort returns the address on 127.0.0.1, such as "127.0.0.1:32770",
// on which the container of the inventory record rec publishes port:
// "8080" (TCP), "8080/tcp" or "53/udp". It is what testcontainers-go's
// MappedPort gives. An error names the ports that are published.
//
//	h := brokertest.Host(t, broker.Request{Args: map[string]any{
//		"container_host": "example/web:1", "ports": "8080"}})
//	addr, err := container.MappedPort(brokertest.Record(t, h), "8080")
//	resp, err := http.Get("http://" + addr + "/health")
func MappedPort(rec *inventory.Record, port string) (string, error) {
	if !strings.Contains(port, "/") {
		port += "/tcp"
	}
	var ports map[string]any
	if rec != nil && rec.Broker != nil {
		ports, _ = rec.Broker.Data["ports"].(map[string]any)
	}
	if addr, ok := ports[port].(string); ok && addr != "" {
		return addr, nil
	}
	name := "(no record)"
	if rec != nil {
		name = rec.Name
	}
	published := make([]string, 0, len(ports))
	for p := range ports {
		published = append(published, p)
	}
	sort.Strings(published)
	if len(published) == 0 {
		return "", fmt.Errorf("container: host %s publishes no port (give the argument ports, e.g. \"8080\")", name)
	}
	return "", fmt.Errorf("container: host %s does not publish %s (it publishes %s)", name, port, strings.Join(published, ", "))
}
