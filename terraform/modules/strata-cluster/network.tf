# Security groups, the bootstrap load balancer and per-broker DNS names.
#
# Brokers accept Kafka clients from var.client_cidrs on the clients' listener
# (9092, or var.client_listener_port once TLS or SASL secures it), admin HTTP
# (9644) from var.admin_cidrs, and Kafka (9092) plus the controller port
# (9093) from each other. With a secured clients' listener, 9092 (PLAINTEXT,
# whose principal is a super user under the ACL authorizer) is open to the
# cluster's own members only. No CIDR is open by default; 0.0.0.0/0 is
# refused by variable validation.

resource "aws_security_group" "broker" {
  name_prefix = "${var.name}-broker-"
  description = "Strata brokers of cluster ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-broker" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "kafka_clients" {
  for_each = toset(var.client_cidrs)

  security_group_id = aws_security_group.broker.id
  description       = "Kafka clients"
  ip_protocol       = "tcp"
  from_port         = local.client_port
  to_port           = local.client_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "admin" {
  for_each = toset(var.admin_cidrs)

  security_group_id = aws_security_group.broker.id
  description       = "Admin HTTP: health, readiness, Prometheus metrics"
  ip_protocol       = "tcp"
  from_port         = local.admin_port
  to_port           = local.admin_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "kafka_members" {
  security_group_id            = aws_security_group.broker.id
  description                  = "Kafka between brokers of this cluster (replication fetches)"
  ip_protocol                  = "tcp"
  from_port                    = local.kafka_port
  to_port                      = local.kafka_port
  referenced_security_group_id = aws_security_group.broker.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "controller_members" {
  security_group_id            = aws_security_group.broker.id
  description                  = "Raft controller traffic between brokers of this cluster only"
  ip_protocol                  = "tcp"
  from_port                    = local.controller_port
  to_port                      = local.controller_port
  referenced_security_group_id = aws_security_group.broker.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "members" {
  for_each = { kafka = local.kafka_port, controller = local.controller_port }

  security_group_id            = aws_security_group.broker.id
  description                  = "To other brokers of this cluster (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.broker.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each = toset(var.egress_cidrs)

  security_group_id = aws_security_group.broker.id
  description       = "HTTPS to S3, KMS, CloudWatch Logs, SSM and the binary download"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
  tags              = local.tags
}

# --- Bootstrap load balancer ----------------------------------------------------

resource "aws_security_group" "nlb" {
  count = var.create_load_balancer ? 1 : 0

  name_prefix = "${var.name}-nlb-"
  description = "Bootstrap load balancer of Strata cluster ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nlb_clients" {
  for_each = var.create_load_balancer ? toset(var.client_cidrs) : toset([])

  security_group_id = aws_security_group.nlb[0].id
  description       = "Kafka clients bootstrapping"
  ip_protocol       = "tcp"
  from_port         = local.client_port
  to_port           = local.client_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_brokers" {
  for_each = var.create_load_balancer ? { kafka = local.client_port, health = local.admin_port } : {}

  security_group_id            = aws_security_group.nlb[0].id
  description                  = "To the brokers (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.broker.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "brokers_from_nlb" {
  for_each = var.create_load_balancer ? { kafka = local.client_port, health = local.admin_port } : {}

  security_group_id            = aws_security_group.broker.id
  description                  = "From the bootstrap load balancer (${each.key})"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.nlb[0].id
  tags                         = local.tags
}

resource "aws_lb" "bootstrap" {
  count = var.create_load_balancer ? 1 : 0

  name_prefix                      = substr(var.name, 0, 6)
  load_balancer_type               = "network"
  internal                         = var.load_balancer_internal
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.nlb[0].id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.load_balancer_deletion_protection
  tags                             = local.tags

  dynamic "access_logs" {
    for_each = var.load_balancer_access_log_bucket == null ? [] : [var.load_balancer_access_log_bucket]

    content {
      bucket  = access_logs.value
      prefix  = "nlb/${var.name}"
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "kafka" {
  count = var.create_load_balancer ? 1 : 0

  name_prefix          = substr(var.name, 0, 6)
  port                 = local.client_port
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  tags                 = local.tags

  # Ready means metadata loaded, logs recovered and the Kafka listener up.
  health_check {
    protocol            = "HTTP"
    port                = tostring(local.admin_port)
    path                = "/ready"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  # A new clients' port (tls or sasl turned on or off) replaces the group;
  # the listener moves to the new one before the old one goes.
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_target_group_attachment" "kafka" {
  count = var.create_load_balancer ? var.broker_count : 0

  target_group_arn = aws_lb_target_group.kafka[0].arn
  target_id        = aws_instance.broker[count.index].id
  port             = local.client_port
}

resource "aws_lb_listener" "kafka" {
  count = var.create_load_balancer ? 1 : 0

  load_balancer_arn = aws_lb.bootstrap[0].arn
  port              = local.client_port
  protocol          = "TCP"
  tags              = local.tags

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.kafka[0].arn
  }
}

# --- Per-broker DNS -------------------------------------------------------------

resource "aws_route53_record" "broker" {
  count = local.use_dns ? var.broker_count : 0

  zone_id = var.route53_zone_id
  name    = local.brokers[count.index].dns_name
  type    = "A"
  ttl     = 60
  records = [aws_instance.broker[count.index].private_ip]
}

resource "aws_route53_record" "bootstrap" {
  count = local.use_dns ? 1 : 0

  zone_id = var.route53_zone_id
  name    = "bootstrap.${var.dns_domain}"
  type    = "A"
  ttl     = var.create_load_balancer ? null : 60
  records = var.create_load_balancer ? null : aws_instance.broker[*].private_ip

  dynamic "alias" {
    for_each = var.create_load_balancer ? [1] : []

    content {
      name                   = aws_lb.bootstrap[0].dns_name
      zone_id                = aws_lb.bootstrap[0].zone_id
      evaluate_target_health = true
    }
  }
}
