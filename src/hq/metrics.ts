import type {FastifyInstance} from 'fastify'
import {Counter, Histogram, Registry, collectDefaultMetrics} from 'prom-client'

/** Prometheus metrics of one HQ process: its own registry, so tests and replicas never share state. */
export function installMetrics(app: FastifyInstance): Registry {
  const registry = new Registry()
  collectDefaultMetrics({register: registry, prefix: 'jil_hq_'})
  const requests = new Counter({
    name: 'jil_hq_http_requests_total',
    help: 'HTTP requests served by HQ, by method, route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  })
  const latency = new Histogram({
    name: 'jil_hq_http_request_duration_seconds',
    help: 'HTTP request latency at HQ, by method and route',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  })
  app.addHook('onResponse', async (req, reply) => {
    // The route pattern, not the URL: ids in paths must not explode the label set.
    const route = req.routeOptions.url ?? 'unmatched'
    requests.inc({method: req.method, route, status: String(reply.statusCode)})
    latency.observe({method: req.method, route}, reply.elapsedTime / 1000)
  })
  return registry
}
