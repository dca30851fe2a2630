import { main } from "../../kit/server.ts";
import { paymentService } from "./service.ts";

await main(paymentService);
