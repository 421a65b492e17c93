"""The cloud price APIs for tests: one HTTP server on 127.0.0.1 answering in each API's real
wire format, so the real clients (boto3/botocore, requests) talk to it unchanged.

- AWS Price List Query API: JSON 1.1 protocol (``X-Amz-Target: AWSPriceListService.GetProducts``),
  ``PriceList`` entries as JSON *strings*, ``NextToken`` paging; reached through
  ``AWS_ENDPOINT_URL_PRICING``.
- EC2 ``DescribeSpotPriceHistory``: the EC2 query protocol (form-encoded POST, XML answer,
  ``nextToken`` paging), with EC2's rule that the price in effect at ``StartTime`` is included;
  reached through ``AWS_ENDPOINT_URL_EC2``.
- GCP Cloud Billing Catalog: ``GET /v1/services/{id}/skus`` with ``pageToken``/``nextPageToken``.
- Azure Retail Prices: ``GET /api/retail/prices`` with its OData ``$filter`` (armRegionName and
  armSkuName terms) and absolute ``NextPageLink`` URLs carrying ``$skip``.

``script(api, [(status, headers, body), ...])`` makes the next answers of one API what a
failing service sends (429 with Retry-After, 500, garbage) before it answers normally again.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.sax.saxutils import escape

Answer = tuple[int, dict[str, str], str]
EC2_NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"


# --- payload builders in each API's documented shape -------------------------------------------


def aws_price_item(
    instance_type: str,
    price: str,
    *,
    region: str = "us-east-1",
    gpus: str = "8",
    sku: str | None = None,
    marketoption: str = "OnDemand",
    effective: str = "2026-07-01T00:00:00Z",
    reserved: dict[str, tuple[str, str]] | None = None,
) -> str:
    """One GetProducts PriceList entry as the API sends it: a JSON document in a string.
    ``reserved`` maps "1yr standard No Upfront"-style names to (upfront USD, hourly USD)."""
    sku = sku or uuid.uuid5(uuid.NAMESPACE_DNS, instance_type + region + marketoption).hex[:16]
    sku = sku.upper()
    attributes = {
        "enhancedNetworkingSupported": "Yes",
        "intelTurboAvailable": "No",
        "memory": "2048 GiB",
        "dedicatedEbsThroughput": "80000 Mbps",
        "vcpu": "192",
        "classicnetworkingsupport": "false",
        "capacitystatus": "Used",
        "locationType": "AWS Region",
        "storage": "8 x 3840 NVMe SSD",
        "instanceFamily": "GPU instance",
        "operatingSystem": "Linux",
        "intelAvx2Available": "Yes",
        "regionCode": region,
        "physicalProcessor": "AMD EPYC 7R13 Processor",
        "clockSpeed": "2.95 GHz",
        "ecu": "NA",
        "networkPerformance": "3200 Gigabit",
        "servicename": "Amazon Elastic Compute Cloud",
        "gpuMemory": "NA",
        "gpu": gpus,
        "vpcnetworkingsupport": "true",
        "instanceType": instance_type,
        "tenancy": "Shared",
        "usagetype": f"USE1-BoxUsage:{instance_type}",
        "normalizationSizeFactor": "384",
        "intelAvx512Available": "No",
        "processorFeatures": "AMD Turbo; AVX; AVX2",
        "servicecode": "AmazonEC2",
        "licenseModel": "No License required",
        "currentGeneration": "Yes",
        "preInstalledSw": "NA",
        "location": "US East (N. Virginia)",
        "processorArchitecture": "64-bit",
        "marketoption": marketoption,
        "operation": "RunInstances",
        "availabilityzone": "NA",
    }
    on_demand_code = f"{sku}.JRTCKXETXF"
    terms: dict[str, Any] = {
        "OnDemand": {
            on_demand_code: {
                "priceDimensions": {
                    f"{on_demand_code}.6YS6EN2CT7": {
                        "unit": "Hrs",
                        "endRange": "Inf",
                        "description": f"${price} per On Demand Linux {instance_type} Instance Hour",
                        "appliesTo": [],
                        "rateCode": f"{on_demand_code}.6YS6EN2CT7",
                        "beginRange": "0",
                        "pricePerUnit": {"USD": price},
                    }
                },
                "sku": sku,
                "effectiveDate": effective,
                "offerTermCode": "JRTCKXETXF",
                "termAttributes": {},
            }
        }
    }
    term_codes = iter(["4NA7Y494T4", "6QCMYABX3D", "HU7G6KETJZ", "BPH4J8HBKS", "7NE97W5U4E"])
    if reserved:
        terms["Reserved"] = {}
        for name, (upfront, hourly) in reserved.items():
            length, offering, option = name.split(" ", 2)
            code = f"{sku}.{next(term_codes)}"
            dimensions = {
                f"{code}.6YS6EN2CT7": {
                    "unit": "Hrs",
                    "endRange": "Inf",
                    "description": f"{instance_type} reserved instance applied",
                    "appliesTo": [],
                    "rateCode": f"{code}.6YS6EN2CT7",
                    "beginRange": "0",
                    "pricePerUnit": {"USD": hourly},
                }
            }
            if float(upfront) > 0:
                dimensions[f"{code}.2TG2D8R56U"] = {
                    "unit": "Quantity",
                    "description": "Upfront Fee",
                    "appliesTo": [],
                    "rateCode": f"{code}.2TG2D8R56U",
                    "pricePerUnit": {"USD": upfront},
                }
            terms["Reserved"][code] = {
                "priceDimensions": dimensions,
                "sku": sku,
                "effectiveDate": effective,
                "offerTermCode": code.split(".")[1],
                "termAttributes": {
                    "LeaseContractLength": length,
                    "OfferingClass": offering,
                    "PurchaseOption": option,
                },
            }
    item = {
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": terms,
        "version": "20261120160000",
        "publicationDate": "2026-11-20T16:00:00Z",
    }
    return json.dumps(item)


def spot_point(instance_type: str, zone: str, price: str, at: datetime) -> dict[str, Any]:
    return {
        "InstanceType": instance_type,
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": price,
        "Timestamp": at,
        "AvailabilityZone": zone,
    }


def gcp_sku(
    sku_id: str,
    description: str,
    *,
    group: str = "GPU",
    usage_type: str = "OnDemand",
    regions: Iterable[str] = ("us-central1", "us-east1", "us-east4"),
    units: str = "0",
    nanos: int = 0,
    unit: str = "h",
    effective: str = "2026-06-01T00:00:00.000Z",
) -> dict[str, Any]:
    """One Cloud Billing Catalog SKU object."""
    regions = list(regions)
    unit_description = {"h": "hour", "GiBy.h": "gibibyte hour"}.get(unit, unit)
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": "Compute",
            "resourceGroup": group,
            "usageType": usage_type,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": [
                        {
                            "startUsageAmount": 0,
                            "unitPrice": {"currencyCode": "USD", "units": units, "nanos": nanos},
                        }
                    ],
                    "usageUnitDescription": unit_description,
                    "baseUnit": "s" if unit == "h" else "By.s",
                    "baseUnitDescription": "second" if unit == "h" else "byte second",
                    "baseUnitConversionFactor": 3600 if unit == "h" else 3865470566400,
                },
                "currencyConversionRate": 1,
                "effectiveTime": effective,
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "MULTI_REGIONAL", "regions": regions},
    }


def azure_item(
    arm_sku: str,
    price: float | str,
    *,
    region: str = "eastus",
    kind: str = "Consumption",
    suffix: str = "",
    product_suffix: str = "",
    term: str | None = None,
    effective: str = "2026-05-01T00:00:00Z",
) -> dict[str, Any]:
    """One Retail Prices item (suffix ' Spot' / ' Low Priority'; product_suffix ' Windows')."""
    size = arm_sku.removeprefix("Standard_").replace("_", " ")
    item: dict[str, Any] = {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": region,
        "location": "US East" if region == "eastus" else region,
        "effectiveStartDate": effective,
        "meterId": str(uuid.uuid5(uuid.NAMESPACE_DNS, arm_sku + region + kind + suffix)),
        "meterName": f"{size}{suffix}",
        "productId": "DZH318Z08M22",
        "skuId": f"DZH318Z08M22/{abs(hash((arm_sku, kind, suffix, term))) % 9999:04d}",
        "productName": f"Virtual Machines {size.split(' ')[0]} Series{product_suffix}",
        "skuName": f"{size}{suffix}",
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": kind,
        "isPrimaryMeterRegion": True,
        "armSkuName": arm_sku,
    }
    if term:
        item["reservationTerm"] = term
    return item


# --- the server ----------------------------------------------------------------------------------


class PriceApis:
    """``with PriceApis() as apis: ...``; set the catalogs, then point the clients at
    ``apis.url``."""

    def __init__(self, page_size: int = 2) -> None:
        self.page_size = page_size
        self.aws_products: dict[tuple[str, str], list[str]] = {}  # (region, type) -> entries
        self.spot_history: list[dict[str, Any]] = []
        self.gcp_skus: list[dict[str, Any]] = []
        self.azure_items: list[dict[str, Any]] = []
        self.azure_next_links = True  # False: NextPageLink stays empty even when more follow
        self.requests: list[tuple[str, str, dict[str, str], str]] = []  # api, path, headers, body
        self._scripts: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        apis = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                apis._handle(self, "GET")

            def do_POST(self) -> None:
                apis._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PriceApis:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, api: str, answers: list[Answer]) -> None:
        with self._lock:
            self._scripts.setdefault(api, []).extend(answers)

    def calls(self, api: str) -> list[tuple[str, str, dict[str, str], str]]:
        return [r for r in self.requests if r[0] == api]

    # dispatch
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        path = urlsplit(handler.path).path
        target = handler.headers.get("X-Amz-Target", "")
        if target.startswith("AWSPriceListService."):
            api = "pricing"
        elif method == "POST" and "Action=" in body:
            api = "ec2"
        elif path.startswith("/v1/services/"):
            api = "gcp"
        elif path.endswith("/api/retail/prices"):
            api = "azure"
        else:
            self._send(handler, 404, {}, "not found")
            return
        with self._lock:
            self.requests.append((api, handler.path, dict(handler.headers), body))
            scripted = self._scripts.get(api, [])
            answer = scripted.pop(0) if scripted else None
        if answer is None:
            answer = getattr(self, f"_{api}")(handler, body)
        self._send(handler, *answer)

    def _send(self, handler: BaseHTTPRequestHandler, status: int, headers: dict, body: str) -> None:
        data = body.encode()
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _page(self, items: list, token: str) -> tuple[list, str]:
        start = int(token) if token.isdigit() else 0
        end = start + self.page_size
        return items[start:end], (str(end) if end < len(items) else "")

    # AWS Price List: JSON 1.1
    def _pricing(self, handler: BaseHTTPRequestHandler, body: str) -> Answer:
        request = json.loads(body or "{}")
        filters = {f["Field"]: f["Value"] for f in request.get("Filters", [])}
        entries = self.aws_products.get(
            (filters.get("regionCode", ""), filters.get("instanceType", "")), []
        )
        page, token = self._page(entries, request.get("NextToken", ""))
        answer: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": page}
        if token:
            answer["NextToken"] = token
        return (
            200,
            {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": str(uuid.uuid4())},
            json.dumps(answer),
        )

    # EC2: query protocol in, XML out
    def _ec2(self, handler: BaseHTTPRequestHandler, body: str) -> Answer:
        form = {k: v[0] for k, v in parse_qs(body).items()}
        types = {v for k, v in form.items() if k.startswith("InstanceType.")}
        start = _parse_time(form.get("StartTime"))
        end = _parse_time(form.get("EndTime")) or datetime.max.replace(tzinfo=UTC)
        chosen = []
        series: dict[tuple, list[dict]] = {}
        for point in sorted(self.spot_history, key=lambda p: p["Timestamp"]):
            if point["InstanceType"] in types:
                key = (
                    point["InstanceType"],
                    point["AvailabilityZone"],
                    point["ProductDescription"],
                )
                series.setdefault(key, []).append(point)
        for points in series.values():
            before = [p for p in points if start and p["Timestamp"] < start]
            chosen += before[-1:]  # EC2 includes the price in effect at StartTime
            chosen += [
                p
                for p in points
                if (not start or p["Timestamp"] >= start) and p["Timestamp"] <= end
            ]
        chosen.sort(key=lambda p: (p["Timestamp"], p["AvailabilityZone"]), reverse=True)
        page, token = self._page(chosen, form.get("NextToken", ""))
        items = "".join(
            "<item>"
            f"<instanceType>{escape(p['InstanceType'])}</instanceType>"
            f"<productDescription>{escape(p['ProductDescription'])}</productDescription>"
            f"<spotPrice>{escape(str(p['SpotPrice']))}</spotPrice>"
            f"<timestamp>{p['Timestamp'].strftime('%Y-%m-%dT%H:%M:%S.000Z')}</timestamp>"
            f"<availabilityZone>{escape(p['AvailabilityZone'])}</availabilityZone>"
            "</item>"
            for p in page
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<DescribeSpotPriceHistoryResponse xmlns="{EC2_NAMESPACE}">'
            f"<requestId>{uuid.uuid4()}</requestId>"
            f"<spotPriceHistorySet>{items}</spotPriceHistorySet>"
            f"<nextToken>{token}</nextToken>"
            "</DescribeSpotPriceHistoryResponse>"
        )
        return 200, {"Content-Type": "text/xml;charset=UTF-8"}, xml

    # GCP Cloud Billing Catalog
    def _gcp(self, handler: BaseHTTPRequestHandler, body: str) -> Answer:
        query = {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query).items()}
        page, token = self._page(self.gcp_skus, query.get("pageToken", ""))
        answer = {"skus": page, "nextPageToken": token}
        return 200, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(answer)

    # Azure Retail Prices
    def _azure(self, handler: BaseHTTPRequestHandler, body: str) -> Answer:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        odata = query.get("$filter", "")
        region = re.search(r"armRegionName eq '([^']*)'", odata)
        skus = set(re.findall(r"armSkuName eq '([^']*)'", odata))
        items = [
            i
            for i in self.azure_items
            if (region is None or i.get("_serve_in", i["armRegionName"]) == region[1])
            and (not skus or i["armSkuName"] in skus)
        ]
        items = [{k: v for k, v in i.items() if not k.startswith("_")} for i in items]
        page, token = self._page(items, query.get("$skip", ""))
        next_link = ""
        if token and self.azure_next_links:
            next_link = f"{self.url}{parts.path}?" + urlencode({**query, "$skip": token})
        answer = {
            "BillingCurrency": "USD",
            "CustomerEntityId": "Default",
            "CustomerEntityType": "Retail",
            "Items": page,
            "NextPageLink": next_link or None,
            "Count": len(page),
        }
        return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(answer)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
