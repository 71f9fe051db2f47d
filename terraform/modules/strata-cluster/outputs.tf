output "bootstrap_servers" {
  description = "Kafka bootstrap address for clients (bootstrap.servers) on the clients' listener: port 9092, or client_listener_port when tls or sasl secures it (see client_security_protocol). The bootstrap DNS name or the load balancer, else the brokers' advertised addresses joined by commas."
  value = (
    local.use_dns ? "bootstrap.${var.dns_domain}:${local.client_port}" :
    var.create_load_balancer ? "${aws_lb.bootstrap[0].dns_name}:${local.client_port}" :
    join(",", [for b in aws_instance.broker : "${b.private_ip}:${local.client_port}"])
  )
}

output "client_security_protocol" {
  description = "security.protocol of the clients' listener at bootstrap_servers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
  value       = local.client_protocol
}

output "broker_addresses" {
  description = "Advertised address of each broker on the clients' listener, in node id order (node id = index + 1)."
  value = [
    for i, b in aws_instance.broker :
    "${coalesce(local.brokers[i].dns_name, b.private_ip)}:${local.client_port}"
  ]
}

output "controller_quorum_voters" {
  description = "The metadata voters every broker runs with, as ID@HOST:PORT,... (controller-quorum-voters); empty for a single broker."
  value       = local.controller_quorum_voters
}

output "admin_endpoints" {
  description = "Admin HTTP base URL of each broker (/health, /ready, /metrics), for Prometheus scrape targets."
  value       = [for b in aws_instance.broker : "http://${b.private_ip}:${local.admin_port}"]
}

output "broker_instance_ids" {
  description = "EC2 instance ids of the brokers, in node id order."
  value       = aws_instance.broker[*].id
}

output "bucket_name" {
  description = "Name of the tier bucket."
  value       = local.bucket_name
}

output "bucket_arn" {
  description = "ARN of the tier bucket."
  value       = aws_s3_bucket.tier.arn
}

output "tier_url" {
  description = "Tier URL the brokers run with (--tier-url)."
  value       = local.tier_url
}

output "kms_key_arn" {
  description = "KMS key encrypting the bucket, the volumes and the log group."
  value       = local.kms_key_arn
}

output "security_group_id" {
  description = "Security group of the brokers; reference it to let more sources in."
  value       = aws_security_group.broker.id
}

output "iam_role_name" {
  description = "IAM role of the brokers."
  value       = aws_iam_role.broker.name
}

output "log_group_name" {
  description = "CloudWatch log group receiving the broker logs (one stream per instance)."
  value       = aws_cloudwatch_log_group.broker.name
}

output "load_balancer_dns_name" {
  description = "DNS name of the bootstrap Network Load Balancer, or null without one."
  value       = var.create_load_balancer ? aws_lb.bootstrap[0].dns_name : null
}
